"""close() giving up on a send at the very moment it returns: the batch is the sender's to
settle then, and close() waits for it (a second at most, as for a sender between sends)
rather than accounting for what the sender is about to settle itself."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from spendstream.producers import Meter
from spendstream.producers.transports import Record, SendResult
from tests.producers.test_meter import _fields, _wait_for


class _Gated:
    """A transport whose first send fails at once (``succeeds``: the batch is then held and
    retried) and whose next send hangs until ``release`` is set, then ends as told."""

    name = "gated"

    def __init__(self, outcome: str) -> None:
        self.outcome = outcome
        self.calls = 0
        self.release = threading.Event()
        self.sent: list[Record] = []

    def send(self, records: list[Record]) -> SendResult:
        self.calls += 1
        if self.outcome == "succeeds" and self.calls == 1:
            return SendResult(failed=list(range(len(records))))
        self.release.wait(60)
        if self.outcome == "fails":
            return SendResult(failed=list(range(len(records))))
        self.sent.extend(records)
        return SendResult()

    def close(self) -> None:
        pass


@pytest.mark.parametrize("outcome", ["fails", "succeeds"])
def test_a_send_returning_as_close_gives_up_is_settled_once_and_counted(
    outcome: str, caplog: pytest.LogCaptureFixture
) -> None:
    # Taken from the sender while it settled: a failed batch was set aside (held) after
    # close() had dropped what was held, so its events were neither dropped nor spooled
    # (queued 2 after close); a held batch that got through was both sent and dropped.
    transport = _Gated(outcome)
    meter = Meter(transport, spool_dir=None, linger_s=0.01)
    for i in range(2):
        meter.record(**_fields(i))
    _wait_for(lambda: transport.calls == (2 if outcome == "succeeds" else 1), "the hung send")

    abandon, settle = meter._abandon, meter._settle

    def abandon_as_the_send_returns(**kw: Any) -> None:
        transport.release.set()  # the send returns just as close() gives up on it
        _wait_for(lambda: meter._send_started is None, "the send returned")
        abandon(**kw)

    def settle_a_moment_later(*args: Any) -> None:
        time.sleep(0.3)
        settle(*args)

    meter._abandon = abandon_as_the_send_returns  # type: ignore[method-assign]
    meter._settle = settle_a_moment_later  # type: ignore[method-assign]
    meter.close(timeout_s=0.2)
    # The sender ended on its own, having settled the send: close() took nothing from it.
    assert "still pending" not in caplog.text
    meter._thread.join(5)  # what the sender did after close() returned counts too
    assert not meter._thread.is_alive()
    m = meter.metrics
    assert m.queued == 0
    if outcome == "succeeds":
        assert (m.sent, m.dropped) == (2, 0)
        assert len(transport.sent) == 2
    else:
        assert (m.sent, m.dropped) == (0, 2)  # closed with no spool and the transport down
