"""The dedup_keys an engine emitted recently: no condition is alerted twice.

Detectors fire each condition once, but some state is forgotten (an idle session, an old
request) and may be rebuilt by late facts. An alert whose dedup_key was emitted within
``retain`` seconds of event time (2 x max(allowed lateness, session idle, 1 day)) is dropped.

Sweep-independent: a key is forgotten once its alert's ts (whole seconds, floored) is more
than ``retain`` behind the watermark at the fact judged; the per-event engine forgot it at
an hourly sweep. ``expire`` only bounds memory.
"""

from __future__ import annotations

from spendstream.config import Config
from spendstream.records import Alert
from spendstream.stream.windows import HOUR_US, US, to_us

__all__ = ["Emitted"]


class Emitted:
    def __init__(self, config: Config) -> None:
        det = config.detection
        self.retain_s = 2 * max(det.allowed_lateness_s, det.session_idle_s, 86_400)
        self.keys: dict[str, int] = {}  # dedup_key -> alert ts, epoch seconds
        self._swept_at: int | None = None

    def admit(self, alert: Alert, watermark_us: int) -> bool:
        """Record ``alert``; False when its dedup_key is still remembered."""
        seen = self.keys.get(alert.dedup_key)
        if seen is not None and seen >= watermark_us // US - self.retain_s:
            return False
        self.keys[alert.dedup_key] = to_us(alert.ts) // US
        return True

    def expire(self, watermark_us: int) -> None:
        if self._swept_at is not None and watermark_us - self._swept_at < HOUR_US:
            return
        self._swept_at = watermark_us
        cutoff = watermark_us // US - self.retain_s
        self.keys = {k: t for k, t in self.keys.items() if t >= cutoff}

    def snapshot(self) -> dict[str, int]:
        return dict(self.keys)

    def restore(self, data: dict[str, int]) -> None:
        self.keys = {str(k): int(t) for k, t in data.items()}
