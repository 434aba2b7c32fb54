"""The throttle of the app's per-epoch pictures (cuvae_tui.throttle.Newest): pure, no Textual needed."""

from cuvae_tui.throttle import Newest


def test_the_first_goes_at_once_then_at_most_every_few_seconds():
    t = Newest(5.0)
    assert t.offer("e1", now=100.0) == "e1"
    assert t.offer("e2", now=101.0) is None and t.due(104.9) is None
    assert t.due(105.0) == "e2" and t.due(200.0) is None  # handed out once


def test_only_the_newest_is_kept():
    t = Newest(5.0)
    t.offer("e1", now=0.0)
    t.offer("e2", now=1.0)
    assert t.offer("e3", now=2.0) is None
    assert t.due(5.0) == "e3"


def test_take_hands_out_the_pending_one_whatever_the_time_and_reset_starts_afresh():
    t = Newest(5.0)
    t.offer("e1", now=0.0)
    t.offer("e2", now=1.0)
    assert t.take(1.5) == "e2" and t.take(1.6) is None
    assert t.offer("e3", now=2.0) is None  # the clock runs from the take
    t.reset()
    assert t.pending is None and t.offer("f1", now=2.1) == "f1"
