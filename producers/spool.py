"""The local spool: a bounded on-disk FIFO of events (JSON Lines) that survives restarts.

Events go here when the transport is down or the in-memory queue is full, and are
replayed from the head, in the order they were written, once the transport answers again.

Layout of one spool directory (a *slot*): ``seg-<n>.jsonl`` segment files, written in
order and deleted once every line in them has been sent, and ``head`` (the segment and
byte offset of the first unsent line, replaced atomically after each sent chunk). A crash
between a send and the head update re-sends that chunk: delivery is at-least-once, and
the pipeline dedupes by ``event_id``.

Several processes may share a spool root (e.g. workers of one web server): each claims
the first free ``slot-<i>`` with an exclusive ``flock``. A restarted process claims a slot
its predecessor left and replays it.

A slot holds one destination's events: its ``destination`` file names where they go (a
transport's ``destination``), so a process claims only a slot of its own destination, one
without the file (new, or left by a version that did not write it: adopted), or an empty
slot of another destination (rewritten as its own). Events spooled for a test broker are
never replayed to production by the next process on the same root.

Bounds: the unsent bytes on disk never exceed ``max_bytes``; a line that would cross it is
refused (``append`` returns how many lines it took) and the caller counts the drop. Lines
are flushed to the OS on every append (a process crash loses nothing; a power cut can lose
what the OS had not written yet).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import BinaryIO

__all__ = ["DEFAULT_SPOOL_ROOT", "Spool", "SpoolUnavailable"]

DEFAULT_SPOOL_ROOT = Path(
    os.environ.get("SPENDSTREAM_SPOOL_DIR")
    or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "spendstream" / "spool"
)
_MAX_SLOTS = 64


class SpoolUnavailable(OSError):
    """Every slot of the spool root is held by another live process or another destination."""


class Spool:
    """A FIFO of byte lines on disk, bounded by ``max_bytes``; thread-safe.

    ``destination`` (one line: a transport's ``destination``) picks the slot: see the module
    docstring. None claims only slots naming no destination.
    """

    def __init__(
        self,
        root: Path | str = DEFAULT_SPOOL_ROOT,
        *,
        max_bytes: int = 256 << 20,
        segment_bytes: int = 8 << 20,
        destination: str | None = None,
        slot: Path | str | None = None,
    ) -> None:
        """``slot``: claim that slot directory and no other, whatever its destination (left
        as it is): ``SpoolUnavailable`` while another process holds it. For replaying a slot
        no Meter of its destination will (``Meter.replay_slot``)."""
        if max_bytes <= 0 or segment_bytes <= 0:
            raise ValueError("spool max_bytes and segment_bytes must be positive")
        self.max_bytes = max_bytes
        self.segment_bytes = segment_bytes
        self._lock = threading.Lock()
        if slot is not None:
            self.dir, self._lock_fd = _claim_this_slot(Path(slot))
            self.root = self.dir.parent
            self.destination = _read_destination(self.dir)
            self.stranded: list[tuple[str, str, int]] = []
        else:
            self.root = Path(root)
            self.destination = destination
            self.dir, self._lock_fd = _claim_slot(self.root, destination)
            # Slots of the root holding events for other destinations: replayed only by a
            # Meter sending there, they wait unseen when none does (the same server spelt
            # otherwise, ``localhost`` for ``127.0.0.1``, a broker added to the list).
            self.stranded = _stranded(self.root, destination)
        self.corrupt_lines = 0  # torn last lines found after a crash, skipped
        # Why the last append took fewer lines than it was given: the bound, or the disk.
        self.refusal = ""
        segs = _segments(self.dir)
        self._head_seg, self._head_off = _read_head(self.dir, segs)
        self._reader: BinaryIO | None = None
        self._reader_seg = -1
        # Never append to a segment an earlier process wrote: its last line may be torn.
        self._write_seg = (segs[-1] + 1) if segs else self._head_seg
        self._writer: BinaryIO | None = None
        self._write_size = 0
        self._bytes = _unsent_bytes(self.dir, segs, self._head_seg, self._head_off)

    # -- state ------------------------------------------------------------------------------

    @property
    def size_bytes(self) -> int:
        """Unsent bytes on disk."""
        return self._bytes

    @property
    def empty(self) -> bool:
        return self._bytes <= 0

    def _path(self, n: int) -> Path:
        return _segment_path(self.dir, n)

    def _write_head(self) -> None:
        tmp = self.dir / "head.tmp"
        tmp.write_text(f"{self._head_seg} {self._head_off}\n")
        os.replace(tmp, self.dir / "head")

    # -- writing ----------------------------------------------------------------------------

    def append(self, lines: Sequence[bytes]) -> int:
        """Append lines (no newline inside); returns how many fit under ``max_bytes``."""
        with self._lock:
            return self._append(lines)

    def append_first(self, lines: Sequence[bytes], *, whole: bool = False) -> tuple[int, bool]:
        """``append``, and whether these lines are the spool's head (it was empty before).
        ``whole``: all the lines or none (0) if they do not all fit under ``max_bytes``,
        judged under the lock the write takes (a disk that refuses bytes can still cut the
        write short)."""
        with self._lock:
            first = self._bytes <= 0
            if whole and self._bytes + sum(len(line) + 1 for line in lines) > self.max_bytes:
                self.refusal = f"spool full ({self.max_bytes:,} bytes unsent)"
                return 0, first
            return self._append(lines), first

    def _append(self, lines: Sequence[bytes]) -> int:
        self.refusal = ""
        taken = 0
        while taken < len(lines):
            chunk: list[bytes] = []  # lines for the current segment
            size = 0
            for line in lines[taken:]:
                if self._bytes + size + len(line) + 1 > self.max_bytes:
                    break
                chunk.append(line + b"\n")
                size += len(line) + 1
                if self._write_size + size >= self.segment_bytes:
                    break  # the segment is full after this line: the next opens another
            if not chunk:
                self.refusal = f"spool full ({self.max_bytes:,} bytes unsent)"
                return taken
            try:
                if self._writer is None or self._write_size >= self.segment_bytes:
                    self._rotate()
                assert self._writer is not None
                written = write_lines(self._writer, chunk)
            except ShortWrite as exc:
                # The disk filled (or failed) before max_bytes: the lines wholly written are
                # kept, a torn one is cut off (the next line would glue itself to it), and
                # the caller counts the rest dropped. Raised, it reached record()'s caller.
                self._kept(exc.lines, exc.size, truncate=True)
                self.refusal = f"cannot write the spool in {self.dir}: {exc.cause}"
                return taken + exc.lines
            except OSError as exc:  # the segment could not be opened
                self.refusal = f"cannot write the spool in {self.dir}: {exc}"
                return taken
            self._kept(len(chunk), written, truncate=False)
            taken += len(chunk)
        return taken

    def _kept(self, lines: int, size: int, *, truncate: bool) -> None:
        if truncate and self._writer is not None:
            with contextlib.suppress(OSError):  # shrinking needs no space
                os.ftruncate(self._writer.fileno(), self._write_size + size)
        self._write_size += size
        self._bytes += size

    def _rotate(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._write_seg += 1
            self._writer = None
        # Unbuffered: what a write() returned is on the OS's side, so after a failed write
        # the file's good end is known (a buffer would hold bytes a later flush writes).
        self._writer = open(self._path(self._write_seg), "ab", buffering=0)  # noqa: SIM115
        self._write_size = self._writer.tell()

    # -- reading ----------------------------------------------------------------------------

    def peek(self, max_lines: int) -> list[bytes]:
        """Up to ``max_lines`` lines from the head, oldest first, without removing them."""
        with self._lock:
            out: list[bytes] = []
            seg, off = self._head_seg, self._head_off
            while len(out) < max_lines and self._bytes > 0:
                if not self._path(seg).exists():
                    if seg >= self._write_seg:
                        break
                    seg, off = seg + 1, 0
                    continue
                reader = self._open_reader(seg)
                reader.seek(off)
                while len(out) < max_lines:
                    line = reader.readline()
                    if not line:
                        break
                    if not line.endswith(b"\n"):
                        break  # being written, or torn: handled by commit / next segment
                    out.append(line[:-1])
                    off += len(line)
                if len(out) < max_lines:
                    if seg >= self._write_seg:
                        break
                    seg, off = seg + 1, 0
            return out

    def _open_reader(self, seg: int) -> BinaryIO:
        if self._reader is None or self._reader_seg != seg:
            if self._reader is not None:
                self._reader.close()
            self._reader = open(self._path(seg), "rb")  # noqa: SIM115 - cached across peeks
            self._reader_seg = seg
        return self._reader

    def commit(self, count: int) -> None:
        """Remove the first ``count`` lines (after they were sent), persisting the head."""
        with self._lock:
            while count > 0:
                path = self._path(self._head_seg)
                if not path.exists():
                    if self._head_seg >= self._write_seg:
                        break
                    self._head_seg, self._head_off = self._head_seg + 1, 0
                    continue
                reader = self._open_reader(self._head_seg)
                reader.seek(self._head_off)
                line = reader.readline()
                if line.endswith(b"\n"):
                    self._head_off += len(line)
                    self._bytes -= len(line)
                    count -= 1
                    continue
                if line:  # a torn last line from a crash: skip it, once
                    self.corrupt_lines += 1
                    self._bytes -= len(line)
                if self._head_seg >= self._write_seg:
                    break
                self._drop_head_segment()
            self._reclaim()
            self._write_head()

    def _drop_head_segment(self) -> None:
        if self._reader is not None and self._reader_seg == self._head_seg:
            self._reader.close()
            self._reader = None
        self._path(self._head_seg).unlink(missing_ok=True)
        self._head_seg, self._head_off = self._head_seg + 1, 0

    def _reclaim(self) -> None:
        # Finished segments go at once; a drained write segment starts over so disk use
        # follows the unsent bytes rather than everything ever spooled.
        while self._head_seg < self._write_seg:
            path = self._path(self._head_seg)
            if path.exists() and self._head_off < path.stat().st_size:
                return
            self._drop_head_segment()
        if self._bytes <= 0 and self._writer is not None and self._head_off >= self._write_size:
            self._writer.close()
            self._writer = None
            self._drop_head_segment()
            self._write_seg = self._head_seg
            self._bytes = 0

    def close(self) -> None:
        with self._lock:
            for f in (self._writer, self._reader):
                if f is not None:
                    f.close()
            self._writer = self._reader = None
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
            os.close(self._lock_fd)

    def forget_after_fork(self) -> None:
        """In a forked child: drop the inherited files without unlocking the parent's slot."""
        for f in (self._writer, self._reader):
            if f is not None:
                with contextlib.suppress(OSError):
                    os.close(f.fileno())  # not f.close(): that would flush the parent's buffer
        with contextlib.suppress(OSError):
            os.close(self._lock_fd)  # closing our copy keeps the parent's flock
        self._writer = self._reader = None


class ShortWrite(OSError):
    """The OS took only part of a write (a full disk, a file size limit): ``lines`` whole
    lines, ``size`` bytes, made it; a torn one may follow them in the file."""

    def __init__(self, lines: int, size: int, cause: OSError) -> None:
        super().__init__(str(cause))
        self.lines = lines
        self.size = size
        self.cause = cause


def write_lines(f: BinaryIO, lines: Sequence[bytes]) -> int:
    """Write ``lines`` (each ending in a newline) to the unbuffered ``f`` as one write,
    resumed after a short one; returns the bytes written. Raises ``ShortWrite`` when the OS
    refuses the rest: what to do with a torn last line is the caller's (the spool cuts it
    off; ``FileTransport``, whose file other processes append to, ends it before its next
    batch)."""
    data = b"".join(lines)
    view = memoryview(data)
    done = 0
    try:
        while done < len(data):
            n = f.write(view[done:])
            if not n:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            done += n
    except OSError as exc:
        whole = _whole_lines(lines, done)
        raise ShortWrite(whole, sum(len(line) for line in lines[:whole]), exc) from exc
    return done


def _whole_lines(chunk: Sequence[bytes], written: int) -> int:
    """How many of ``chunk``'s lines lie wholly within its first ``written`` bytes."""
    end = 0
    for i, line in enumerate(chunk):
        end += len(line)
        if end > written:
            return i
    return len(chunk)


def _segment_path(slot: Path, n: int) -> Path:
    return slot / f"seg-{n:012d}.jsonl"


def _segments(slot: Path) -> list[int]:
    return sorted(int(p.name[4:16]) for p in slot.glob("seg-*.jsonl"))


def _read_head(slot: Path, segs: list[int]) -> tuple[int, int]:
    try:
        seg_text, off_text = (slot / "head").read_text().split()
        seg, off = int(seg_text), int(off_text)
    except (OSError, ValueError):
        return (segs[0] if segs else 0), 0
    if segs and seg < segs[0]:
        return segs[0], 0
    if seg not in segs:
        # Its segment is gone: drained and dropped by a process that died before it
        # replaced the head. Lines spooled from now on start that segment afresh.
        return seg, 0
    return seg, off


def _unsent_bytes(slot: Path, segs: list[int], head_seg: int, head_off: int) -> int:
    total = sum(_segment_path(slot, n).stat().st_size for n in segs)
    return total - (head_off if head_seg in segs else 0)


def _slot_unsent(slot: Path) -> int:
    """The unsent bytes of a slot, as a Spool opening it would count them."""
    segs = _segments(slot)
    return _unsent_bytes(slot, segs, *_read_head(slot, segs))


def _read_destination(slot: Path) -> str | None:
    """The slot's destination; None when it has no ``destination`` file (new, or older)."""
    try:
        return (slot / "destination").read_text().rstrip("\n")
    except FileNotFoundError:
        return None


def _write_destination(slot: Path, destination: str | None) -> None:
    if destination is None:  # a Spool told no destination leaves the slot adoptable
        (slot / "destination").unlink(missing_ok=True)
        return
    tmp = slot / "destination.tmp"
    tmp.write_text(destination + "\n")
    os.replace(tmp, slot / "destination")  # a crash never leaves a half-written name


def _takes(slot: Path, destination: str | None) -> bool:
    """Whether a process sending to ``destination`` may use this slot (its lock held), the
    slot then naming ``destination``."""
    owner = _read_destination(slot)
    if owner == destination:
        return True
    # Unnamed (written before slots named their destination): adopted. Another
    # destination's events are replayed only by a process sending there; once drained, the
    # slot is free for anyone.
    if owner is not None and _slot_unsent(slot) > 0:
        return False
    _write_destination(slot, destination)
    return True


def _stranded(root: Path, destination: str | None) -> list[tuple[str, str, int]]:
    """(slot, its destination, unsent bytes) of each slot under ``root`` holding events for
    a destination other than ``destination``. Read without their locks: a look, not a
    claim (a live process may be sending them this moment)."""
    out: list[tuple[str, str, int]] = []
    for i in range(_MAX_SLOTS):
        slot = root / f"slot-{i}"
        if not slot.is_dir():
            continue
        try:
            owner = _read_destination(slot)
            if owner is None or owner == destination:
                continue
            unsent = _slot_unsent(slot)
        except (OSError, ValueError):  # changing under us, or files no Spool wrote there
            continue
        if unsent > 0:
            out.append((slot.name, owner, unsent))
    return out


def _claim_slot(root: Path, destination: str | None) -> tuple[Path, int]:
    if destination is not None and ("\n" in destination or "\r" in destination):
        raise ValueError(f"a spool destination is one line: {destination!r}")
    root.mkdir(parents=True, exist_ok=True)
    foreign = 0
    for i in range(_MAX_SLOTS):
        slot = root / f"slot-{i}"
        slot.mkdir(exist_ok=True)
        fd = os.open(slot / "lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue
        try:
            # Judged under the slot's lock: no other process can be writing to it now.
            if _takes(slot, destination):
                return slot, fd
        except BaseException:
            _release(fd)
            raise
        _release(fd)
        foreign += 1
    raise SpoolUnavailable(
        f"all {_MAX_SLOTS} spool slots under {root} are in use: {_MAX_SLOTS - foreign} held by "
        f"live processes, {foreign} holding events for other destinations"
    )


def _claim_this_slot(slot: Path) -> tuple[Path, int]:
    if not (slot.name.startswith("slot-") and (slot / "lock").is_file()):
        raise SpoolUnavailable(f"{slot} is not a spool slot (a slot-<i> directory a Spool made)")
    fd = os.open(slot / "lock", os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise SpoolUnavailable(
            f"{slot} is held by a running process, which replays or writes it: wait for it "
            "to end, or leave it the slot"
        ) from None
    return slot, fd


def _release(fd: int) -> None:
    fcntl.flock(fd, fcntl.LOCK_UN)
    os.close(fd)
