"""The training step replayed from static buffers (what a CUDA graph records, issue 14) equals the
eager step bit for bit; on a CPU its fallback runs the same phases, buffers and counting."""

import dataclasses

import pytest
import torch
from conftest import small, tiny_data

from reslab import checkpoints, runs, step
from reslab.data import make_synthetic
from reslab.errors import UserError
from reslab.models import ModelConfig, build_model
from reslab.train import train

# (lr, warming) of each iteration: a warm-up phase, the lr it returns to, and two drops, each
# long enough to be recorded and replayed (EAGER_STEPS eager steps first).
LOW, FIRST, DROP, AGAIN = ("low-lr start", 0), ("phase", 0), ("phase", 1), ("phase", 2)
SCHEDULE = [(0.01, True, LOW)] * 6 + [(0.1, False, FIRST)] * 5 + [(0.01, False, DROP)] * 4 + [(0.1, False, AGAIN)] * 2


def inputs_and_sums(seed=0):
    torch.manual_seed(seed)
    model = build_model(ModelConfig("resnet", 8, width=8))
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    data = make_synthetic(64, 8, (3, 16, 16), seed=seed)
    inputs = step.StepInputs(
        net=model,
        opt=opt,
        train_x=data.train_x,
        train_y=data.train_y,
        mean=torch.full((1, 3, 1, 1), 120.0 / 255),
        std=torch.full((1, 3, 1, 1), 0.25),
        aug_gen=torch.Generator().manual_seed(seed + 2),
        pad=2,
        mine=slice(None),
        precision="fp32",
        memory_format=torch.channels_last,
    )
    return model, inputs, step.Sums.zeros("cpu")


def train_with(kind):
    model, inputs, sums = inputs_and_sums()
    order = torch.Generator().manual_seed(1)
    run = step.Graphed(inputs, sums, batch=16) if kind == "static" else step.Eager(inputs, sums)
    for lr, warming, phase in SCHEDULE:
        run(torch.randperm(64, generator=order)[:16], lr, warming, phase)
    return model, inputs, sums, run


def test_the_static_step_equals_the_eager_step_bit_for_bit():
    eager_model, eager_in, eager_sums, _ = train_with("eager")
    static_model, static_in, static_sums, graphed = train_with("static")
    for (name, a), b in zip(eager_model.state_dict().items(), static_model.state_dict().values()):
        assert torch.equal(a, b), name
    for a, b in zip(eager_in.opt.state.values(), static_in.opt.state.values()):
        assert torch.equal(a["momentum_buffer"], b["momentum_buffer"])
    for field in ("loss_sum", "wrong", "window_wrong", "first_bad", "iteration"):
        assert torch.equal(getattr(eager_sums, field), getattr(static_sums, field)), field
    assert int(static_sums.iteration) == len(SCHEDULE) and int(static_sums.window_wrong) > 0
    assert torch.equal(eager_in.aug_gen.get_state(), static_in.aug_gen.get_state())
    # Every phase long enough was recorded once and replayed: warm-up 0.01, 0.1 and the drop; the
    # last two 0.1 steps (a phase again) are its first eager ones.
    assert graphed.recordings == 3 and graphed.warm == 2


def test_a_recorded_step_replays_the_buffers_it_was_recorded_with():
    """A recording keeps reading the static index buffer and writing the same sums: reassigning a
    sum instead of updating it in place would leave the replays writing where no one reads."""
    _, inputs, sums = inputs_and_sums()
    graphed = step.Graphed(inputs, sums, batch=16)
    for i in range(step.EAGER_STEPS + 3):
        graphed(torch.arange(16) + i, 0.1, False)
    seen = int(sums.iteration)
    sums.loss_sum.zero_()
    graphed(torch.arange(16), 0.1, False, FIRST)
    assert int(sums.iteration) == seen + 1 and float(sums.loss_sum) > 0


def assert_same_run(a, b):
    """Two run directories hold the same metrics (but for wall time) and the same weights, bit for bit."""
    strip = lambda rows: [{k: v for k, v in r.items() if k not in runs.TIMING_FIELDS} for r in rows]  # noqa: E731
    assert strip(runs.read_metrics(a)) == strip(runs.read_metrics(b))
    wa, wb = checkpoints.load_weights(a / "model.safetensors"), checkpoints.load_weights(b / "model.safetensors")
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_a_whole_run_with_the_static_step_equals_the_eager_run(tmp_path, monkeypatch, precision):
    """train() with --cuda-graphs resolved on (the CPU fallback) gives the eager run's metrics and
    weights exactly, through the warm-up, an lr drop and a resume."""
    data = tiny_data()
    cfg = small(precision=precision, warmup="on", warmup_error=0.95, augment="on")
    train(cfg, tmp_path / "eager", data=data, progress=False)
    monkeypatch.setattr(step, "resolve", lambda *a: True)
    half = small(precision=precision, warmup="on", warmup_error=0.95, augment="on")
    # Stop after the second evaluation (as a Ctrl-C would), then resume: the recordings start over.
    real = step.Graphed.__call__
    calls = {"n": 0}

    def stop_at_12(self, idx, lr, warming, phase=None):
        real(self, idx, lr, warming, phase)
        calls["n"] += 1
        if calls["n"] == 12:
            import signal

            signal.raise_signal(signal.SIGINT)

    monkeypatch.setattr(step.Graphed, "__call__", stop_at_12)
    from reslab.train import Interrupted

    with pytest.raises(Interrupted):
        train(half, tmp_path / "static", data=data, progress=False)
    monkeypatch.setattr(step.Graphed, "__call__", real)
    train(half, tmp_path / "static", resume=True, data=data, progress=False)
    assert_same_run(tmp_path / "static", tmp_path / "eager")
    assert runs.read_config(tmp_path / "static").resolved.cuda_graphs is True


def test_cuda_graphs_on_needs_cuda_and_one_process():
    with pytest.raises(UserError, match="needs a CUDA device"):
        step.resolve("on", torch.device("cpu"), False)
    with pytest.raises(UserError, match="one process"):
        step.resolve("on", torch.device("cpu"), True)
    assert step.resolve("auto", torch.device("cpu"), False) is False
    assert step.resolve("auto", torch.device("cuda"), False) is True
    assert step.resolve("auto", torch.device("cuda"), True) is False


def test_cuda_graphs_is_a_speed_setting_not_part_of_the_recipe(tmp_path):
    """A run resumed with another --cuda-graphs is the same run (it learns the same thing)."""
    data = tiny_data()
    train(small(iterations=12), tmp_path / "r", data=data, progress=False)
    other = dataclasses.replace(small(iterations=12), cuda_graphs="off")
    train(other, tmp_path / "r", resume=True, data=data, progress=False)  # not refused


@pytest.mark.parametrize("graphs", [False, True], ids=["eager", "static"])
def test_a_run_stopped_twice_in_one_epoch_resumes_exactly(tmp_path, monkeypatch, graphs):
    """Stopped at iterations 10 and 13 (one epoch is 8), resumed each time: the data order of the
    second epoch, drawn again after each resume, must be the one the first draw made."""
    import signal

    from reslab.train import Interrupted

    data = tiny_data()
    cfg = small(augment="on")
    train(cfg, tmp_path / "whole", data=data, progress=False)
    monkeypatch.setattr(step, "resolve", lambda *a: graphs)
    kind = step.Graphed if graphs else step.Eager
    real = kind.__call__
    for stop_at in (10, 13):
        calls = {"n": 0}

        def stopping(self, idx, lr, warming, phase=None, stop_at=stop_at, calls=calls):
            real(self, idx, lr, warming, phase)
            calls["n"] += 1
            if int(self.sums.iteration) == stop_at:
                signal.raise_signal(signal.SIGINT)

        monkeypatch.setattr(kind, "__call__", stopping)
        with pytest.raises(Interrupted, match=f"at iteration {stop_at} "):
            train(cfg, tmp_path / "cut", resume=stop_at == 13, data=data, progress=False)
    monkeypatch.setattr(kind, "__call__", real)
    train(cfg, tmp_path / "cut", resume=True, data=data, progress=False)
    assert_same_run(tmp_path / "cut", tmp_path / "whole")
