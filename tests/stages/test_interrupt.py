"""The Ctrl-C / SIGTERM stop of an online run: one event is one stop request, a later second signal stops at once."""

import os
import signal
import time

import pytest

from edgerlhf.stages.online.resume import Interrupt


def test_an_echoed_signal_is_one_request_and_a_later_one_stops_at_once():
    before = signal.getsignal(signal.SIGTERM)
    with Interrupt("ppo") as it:
        os.kill(os.getpid(), signal.SIGTERM)
        os.kill(os.getpid(), signal.SIGTERM)  # the same event again (a dying parent's threads, a group kill)
        time.sleep(0.05)
        assert it.requested  # a graceful stop asked for, no KeyboardInterrupt: the checkpoint still gets written
        time.sleep(Interrupt.SAME_EVENT_S + 0.1)
        with pytest.raises(KeyboardInterrupt):  # a person pressing again: stop now
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.5)
    assert signal.getsignal(signal.SIGTERM) is before
