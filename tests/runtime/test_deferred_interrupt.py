"""``deferred_interrupt`` (runtime/embedded.py): Ctrl-C waits for a commit and its counting.

A batch that landed must be in the summary the interrupt prints ("the batches finished
before it"), and clients' breakers file must follow what landed; a second Ctrl-C still
stops at once. Real SIGINTs sent to this process."""

from __future__ import annotations

import os
import signal
import threading

import pytest

from spendstream.runtime.embedded import deferred_interrupt


def test_a_first_ctrl_c_is_raised_when_the_block_ends_not_inside_it() -> None:
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    done: list[str] = []
    with pytest.raises(KeyboardInterrupt), deferred_interrupt():
        os.kill(os.getpid(), signal.SIGINT)
        done.append("committed")  # the block goes on past the signal
        done.append("counted")
    assert done == ["committed", "counted"]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # put back


def test_a_second_ctrl_c_stops_the_block_at_once() -> None:
    done: list[str] = []
    with pytest.raises(KeyboardInterrupt), deferred_interrupt():
        os.kill(os.getpid(), signal.SIGINT)
        done.append("held")
        os.kill(os.getpid(), signal.SIGINT)
        done.append("not reached")
    assert done == ["held"]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_no_ctrl_c_no_interrupt_and_other_threads_are_left_alone() -> None:
    with deferred_interrupt():
        pass
    seen: list[object] = []

    def other() -> None:  # signal.signal is the main thread's alone: not touched here
        with deferred_interrupt():
            seen.append(signal.getsignal(signal.SIGINT))

    thread = threading.Thread(target=other)
    thread.start()
    thread.join()
    assert seen == [signal.default_int_handler]
