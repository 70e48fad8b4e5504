"""128-bit hashes of Arrow string columns, vectorised with numpy (no Python loop per key).

The dedupe store keeps event_ids as two 64-bit halves: ``hi`` places the key in a hash
table, ``hi`` and ``lo`` together decide equality. Two different ids collide with
probability ~n²/2^129 — at 10^9 keys about 10^-21 — so a false "duplicate" (a lost fact)
is not a practical risk, while keys take 16 bytes instead of a Python string each.

Each string is laid out zero-padded in 8-byte words (its length is mixed in, so "a" and
"a\\0" differ) and its own words (never the padding) are folded through two
multiply-xorshift chains with independent constants, finished with the murmur3 64-bit
finaliser. A value hashes the same in any batch, in any process, on any machine: nothing
is seeded at random.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

__all__ = ["hash128"]

_U64 = np.uint64
_M1 = _U64(0x9E3779B97F4A7C15)
_M2 = _U64(0xC2B2AE3D27D4EB4F)
_S1 = _U64(0x243F6A8885A308D3)
_S2 = _U64(0x13198A2E03707344)
_F1 = _U64(0xFF51AFD7ED558CCD)
_F2 = _U64(0xC4CEB9FE1A85EC53)


def _fmix(h: np.ndarray) -> np.ndarray:
    h ^= h >> _U64(33)
    h *= _F1
    h ^= h >> _U64(33)
    h *= _F2
    h ^= h >> _U64(33)
    return h


def _padded_words(values: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """(n x w uint64 words of the zero-padded strings, lengths)."""
    arr = values.cast(pa.large_binary()) if not pa.types.is_large_binary(values.type) else values
    n = len(arr)
    if arr.null_count:
        arr = pc.fill_null(arr, pa.scalar(b"", pa.large_binary()))
    offsets = np.frombuffer(arr.buffers()[1], dtype=np.int64, count=n + 1, offset=arr.offset * 8)
    lengths = np.diff(offsets)
    width = int(lengths.max()) if n else 0
    words = max(1, (width + 7) // 8)
    matrix = np.zeros((n, words * 8), dtype=np.uint8)
    if int(offsets[-1] - offsets[0]):
        data = np.frombuffer(arr.buffers()[2], dtype=np.uint8)[offsets[0] : offsets[-1]]
        # Row-major boolean assignment fills each row's first len bytes, in order.
        matrix[np.arange(words * 8)[None, :] < lengths[:, None]] = data
    return matrix.view("<u8"), lengths.astype(np.uint64)


def hash128(values: pa.Array | pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray]:
    """(hi, lo) uint64 hashes of each string/binary value; ``hi`` is never 0 (0 marks empty)."""
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks() if values.num_chunks != 1 else values.chunk(0)
    n = len(values)
    if n == 0:
        return np.zeros(0, np.uint64), np.zeros(0, np.uint64)
    words, lengths = _padded_words(values)
    with np.errstate(over="ignore"):
        hi = _S1 ^ (lengths * _M2)
        lo = _S2 ^ (lengths * _M1)
        for j in range(words.shape[1]):
            # Only a string's own words: the padding a longer neighbour forces on the batch
            # must not change its hash (the same id hashes alike in any batch).
            live = lengths > np.uint64(8 * j)
            w = words[:, j]
            hi = np.where(live, _fmix((hi ^ w) * _M1), hi)
            lo = np.where(live, _fmix((lo ^ (w * _M2)) + _S1), lo)
        hi = _fmix(hi ^ lo)
        lo = _fmix(lo + hi * _M2)
    hi[hi == 0] = 1
    return hi, lo
