"""`reslab experiment init`: the branch-to-shortcut measurement, the verdicts on made-up runs, and
a whole small experiment that a second run does not train again."""

import pytest
import torch

from reslab import branches
from reslab.init_verdicts import judge
from reslab.models import ModelConfig, build_model


def net(arch: str, depth: int, gamma: float) -> torch.nn.Module:
    torch.manual_seed(0)
    m = build_model(ModelConfig(arch, depth))
    m.scale_block_gamma(gamma)
    return m


def test_a_residual_block_started_at_scale_0_is_the_identity():
    x = torch.randn(32, 3, 8, 8)
    zero = branches.measure(net("resnet", 14, 0.0), x, train_mode=True)
    assert [b["ratio"] for b in zero["blocks"]] == [0.0] * 6 and branches.mean_ratio(zero) == 0.0
    assert zero["signal"] > 0  # the stem's output reaches the classifier through the shortcuts
    # The scale sets the branch against the shortcut: smaller scale, smaller branch.
    one, small = (branches.mean_ratio(branches.measure(net("resnet", 14, g), x, True)) for g in (1.0, 0.3))
    assert one > small > 0


def test_a_plain_net_started_at_scale_0_passes_no_signal_and_above_0_its_bn_undoes_the_scale():
    x = torch.randn(32, 3, 8, 8)
    zero = branches.measure(net("plain", 14, 0.0), x, train_mode=True)
    assert zero["signal"] == 0.0 and zero["blocks"][0]["gain"] == 0.0
    assert branches.mean_ratio(zero) is None  # a plain block has no shortcut to compare with
    # The next block's BN normalises again: from the second block on the gains do not follow the scale.
    a = branches.measure(net("plain", 14, 1.0), x, True)["blocks"]
    b = branches.measure(net("plain", 14, 0.3), x, True)["blocks"]
    assert b[0]["gain"] == pytest.approx(0.3 * a[0]["gain"], rel=0.05)
    assert [r["gain"] for r in b[1:]] == pytest.approx([r["gain"] for r in a[1:]], rel=0.05)


def row(arch, depth, scale, seed, err, init_ratio=None, end_ratio=None, signal=1.0, blocks=3):
    ratios = [] if end_ratio is None else [end_ratio] * blocks
    return {
        "arch": arch,
        "depth": depth,
        "scale": scale,
        "seed": seed,
        "label": f"{arch}-{depth}",
        "classes": 10,
        "train_error": err,
        "init_ratio": init_ratio,
        "end_ratio": end_ratio,
        "init_signal": signal,
        "end": {"blocks": [{"block": i + 1, "ratio": r} for i, r in enumerate(ratios)]},
    }


def runs_where(gap_at_1: float, plain_errors: dict) -> list[dict]:
    rows = []
    for seed in (0, 1):
        for scale, res_gap in ((1.0, gap_at_1), (0.3, 0.0), (0.0, -0.01)):
            rows += [
                row("resnet", 20, scale, seed, 0.10, scale * 0.5, 0.4 if scale else 0.2),
                row("resnet", 56, scale, seed, 0.10 + res_gap, scale * 0.4, 0.3 if scale else 0.1),
                row("plain", 20, scale, seed, plain_errors[scale][0] + 0.002 * seed, signal=float(scale > 0)),
                row("plain", 56, scale, seed, plain_errors[scale][1] + 0.002 * seed, signal=float(scale > 0)),
            ]
    return rows


PLAIN = {1.0: (0.3, 0.6), 0.3: (0.3, 0.6), 0.0: (0.9, 0.9)}


def test_verdicts_follow_the_measurements():
    found = {v.claim.split(" (")[0].split(":")[0]: v for v in judge(runs_where(0.05, PLAIN), [1.0, 0.3, 0.0])}
    assert [v.holds for v in found.values()] == [True, True, True, True, True]
    # The gap grows instead of shrinking: NO.
    rows = [
        dict(r, train_error=r["train_error"] + 0.1)
        if r["arch"] == "resnet" and r["depth"] == 56 and r["scale"] == 0
        else r
        for r in runs_where(0.0, PLAIN)
    ]
    assert judge(rows, [1.0, 0.3, 0.0])[0].holds is False
    # Plain errors that follow the scale beyond the seeds' spread: the control fails.
    moving = {1.0: (0.3, 0.6), 0.3: (0.3, 0.8), 0.0: (0.9, 0.9)}
    control = judge(runs_where(0.05, moving), [1.0, 0.3, 0.0])[1]
    assert control.holds is False and "beyond seed noise" in control.text


def test_what_a_budget_cannot_say_is_not_testable():
    rows = [r for r in runs_where(0.05, PLAIN) if r["scale"] != 0.0]
    zero = judge(rows, [1.0, 0.3])[2]
    assert zero.testable is False and "scale 0" in zero.text
    fitted = [dict(r, train_error=0.0) if r["arch"] == "resnet" else r for r in runs_where(0.0, PLAIN)]
    gap = judge(fitted, [1.0, 0.3, 0.0])[0]
    assert gap.testable is False and "fits the training set" in gap.text


def test_a_small_init_experiment_runs_reports_and_does_not_train_again(tmp_path, capsys):
    from reslab.cli import main

    argv = [
        "experiment",
        "init",
        "--dataset",
        "synthetic",
        "--depths",
        "8,14",
        "--scales",
        "1,0",
        "--iterations",
        "6",
        "--eval-every",
        "3",
        "--batch-size",
        "32",
        "--precision",
        "fp32",
        "--jobs",
        "1",
        "--out",
        str(tmp_path / "e"),
    ]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert out.count("[") >= 5 and "report:" in out
    assert (tmp_path / "e" / "report.html").exists() and (tmp_path / "e" / "scale-0" / "report.html").exists()
    assert len(list((tmp_path / "e" / "figures").glob("*.png"))) == 3
    before = (tmp_path / "e" / "scale-1" / "resnet-14-seed0" / "metrics.csv").read_bytes()
    assert main(argv) == 0
    assert "4 of 4 runs already finished; 0 to run" in capsys.readouterr().out
    assert (tmp_path / "e" / "scale-1" / "resnet-14-seed0" / "metrics.csv").read_bytes() == before
    # The record read back on --resume is checked against its schema (init_study.InitRecord).
    record = tmp_path / "e" / "init.json"
    assert main(["experiment", "init", "--resume", "--out", str(tmp_path / "e")]) == 0
    assert "4 of 4 runs already finished" in capsys.readouterr().out
    record.write_text(record.read_text().replace('"scales": [\n    1.0,', '"scales": [\n    "1",'))
    assert main(["experiment", "init", "--resume", "--out", str(tmp_path / "e")]) == 2
    assert "init.json is damaged: scales[0]: expected `float`, got `str`" in capsys.readouterr().err
