"""The learning-rate schedule: one object that the step, the recorder, the plan and the report ask."""

import pytest

from reslab.config import TrainConfig
from reslab.schedule import Schedule


def test_linear_ramp_then_cosine():
    s = Schedule(0.1, 1000, "cosine", ramp=200, start_lr=0.01)
    lr = s.lr_at
    assert lr(0) == pytest.approx(0.01) and lr(100) == pytest.approx(0.055) and lr(200) == pytest.approx(0.1)
    assert lr(600) == pytest.approx(0.05) and lr(999) < 1e-5
    values = [lr(i) for i in range(200, 1000)]
    assert all(a >= b for a, b in zip(values, values[1:]))  # falls monotonically after the ramp
    assert [(p.name, p.start, p.end, p.constant) for p in s.phases()] == [
        ("linear ramp", 0, 200, False),
        ("cosine", 200, 1000, False),
    ]
    # The lr changes at every iteration: no phase can be recorded.
    assert {s.phase_key(i, False) for i in range(1000)} == {None}


def test_the_paper_step_schedule_and_a_ramp_before_it():
    paper = Schedule(0.1, 1000, milestones=(500, 750))
    assert [paper.lr_at(i) for i in (0, 499, 500, 750)] == pytest.approx([0.1, 0.1, 0.01, 0.001])
    assert [(p.start, p.end) for p in paper.phases()] == [(0, 500), (500, 750), (750, 1000)]
    assert [p.lr_start for p in paper.phases()] == pytest.approx([0.1, 0.01, 0.001])
    assert paper.phase_key(499, False) == ("phase", 0) and paper.phase_key(500, False) == ("phase", 1)
    ramped = Schedule(0.1, 1000, milestones=(500, 750), ramp=100)
    assert ramped.lr_at(50) == pytest.approx(0.055)
    # A ramp rises: its iterations are no phase to record (a recording keyed by the lr would
    # have taken each of them for a new phase, or an equal lr later for an old one).
    assert ramped.phase_key(50, False) is None and ramped.phase_key(100, False) == ("phase", 1)
    assert ramped.phases()[0].name == "linear ramp" and len(ramped.phases()) == 4


def test_the_paper_low_lr_start_is_its_own_phase():
    s = Schedule.of(TrainConfig(depth=110, iterations=1000), 1000, low_lr_start=True)
    assert s.milestones == (500, 750) and s.lr_at(600, low=True) == 0.01 and s.lr_at(600) == pytest.approx(0.01)
    assert s.phase_key(600, low=True) == ("low-lr start", 0) != s.phase_key(600, low=False)
    text = s.describe()
    assert "the paper's low-lr start (lr 0.01 until training error < 80%)" in text and "500, 750" in text


def test_every_run_setting_feeds_the_schedule():
    cfg = TrainConfig(schedule="cosine", linear_warmup=20, warmup_lr=0.02, lr=0.2, iterations=100)
    s = Schedule.of(cfg, 100, low_lr_start=False)
    assert (s.kind, s.ramp, s.start_lr, s.lr, s.milestones) == ("cosine", 20, 0.02, 0.2, ())
    assert (
        s.describe()
        == "a linear ramp from lr 0.02 over the first 20 iterations, then lr 0.2 falling to 0 along a cosine"
    )
