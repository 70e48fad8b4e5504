"""librdkafka errors -> the project's: which ones only need a transaction abort."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from spendstream.errors import KafkaAuthError, KafkaClientError, KafkaUnavailable
from spendstream.kafka._errors import translate


@dataclass
class FakeError:
    code: str
    is_retriable: bool = False
    is_fatal: bool = False
    abort: bool = False

    def name(self) -> str:
        return self.code

    def str(self) -> str:
        return "what librdkafka said"

    def retriable(self) -> bool:
        return self.is_retriable

    def fatal(self) -> bool:
        return self.is_fatal

    def txn_requires_abort(self) -> bool:
        return self.abort


@pytest.mark.parametrize(
    ("err", "kind", "abortable"),
    [
        (FakeError("INVALID_PRODUCER_EPOCH", abort=True), KafkaClientError, True),
        (FakeError("_TIMED_OUT", is_retriable=True, abort=True), KafkaUnavailable, True),
        (FakeError("PRODUCER_FENCED", is_fatal=True, abort=True), KafkaClientError, False),
        (FakeError("PRODUCER_FENCED", is_fatal=True), KafkaClientError, False),
        (FakeError("TRANSACTIONAL_ID_AUTHORIZATION_FAILED"), KafkaAuthError, False),
        (FakeError("_STATE"), KafkaClientError, False),
    ],
)
def test_only_a_transaction_error_that_is_not_fatal_is_abortable(
    err: FakeError, kind: type[KafkaClientError], abortable: bool
) -> None:
    error = translate(err, "commit_transaction")
    assert type(error) is kind
    assert error.abortable is abortable
    assert error.code == err.code and "commit_transaction" in str(error)


def test_a_project_kafka_error_is_not_abortable_unless_said() -> None:
    assert KafkaClientError("x").abortable is False
    assert KafkaUnavailable("x", abortable=True).abortable is True


def test_an_admin_future_that_never_answers_is_kafka_unavailable_not_a_futures_timeout() -> None:
    # concurrent.futures.TimeoutError is no SpendstreamError: a partition's opening, which
    # retries those while the broker is away, let it through and its loop thread ended.
    from concurrent.futures import Future

    from spendstream.errors import KafkaUnavailable
    from spendstream.kafka._waits import result

    with pytest.raises(KafkaUnavailable) as caught:
        result(Future(), 0.05, "cannot add partitions to t", "localhost:9092")
    assert caught.value.retriable and caught.value.code == "_TIMED_OUT"
    assert (
        str(caught.value) == "cannot add partitions to t: no answer within 0.05 s (localhost:9092)"
    )
