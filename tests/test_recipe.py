"""The CPU preset's recipe: its schedule, image size and presets on the command line, the
crossovers, and the verdict labels it brought (not testable here; the loss at the floor)."""

import dataclasses

import numpy as np
import pytest
import torch
from conftest import refused

from reslab import cli, files, settings
from reslab.commands import config_from_args
from reslab.config import TrainConfig, recipe
from reslab.data import make_dataset, resize
from reslab.experiment import grid
from reslab.presets import PRESETS
from reslab.summary import crossover, crossovers


def test_resize_averages_areas_and_keeps_labels():
    x = np.arange(4 * 4, dtype=np.uint8).reshape(1, 1, 4, 4).repeat(3, axis=0)
    ds = make_dataset("t", x, np.array([0, 1, 2]), x[:2], np.array([0, 1]), ["a", "b", "c"])
    small = resize(ds, 2)
    assert small.image_shape == (1, 2, 2) and small.test_x.shape == (2, 1, 2, 2)
    # Each new pixel is the mean of the 2x2 block it covers: (0+1+4+5)/4 = 2.5 rounds to 2 (half to even).
    assert small.train_x[0, 0].tolist() == [[2, 4], [10, 12]]
    assert torch.equal(small.train_y, ds.train_y) and small.info["resized_from"] == [4, 4]
    assert resize(ds, None) is ds and resize(ds, 4) is ds


def args_for(*argv):
    parser = cli.build_parser(list(argv))
    return settings.parse(parser, parser.commands[argv[0]], list(argv))


def test_the_cpu_preset_gives_plain_and_residual_nets_the_same_recipe():
    args = args_for("experiment", "degradation", "--preset", "cpu", "--dataset", "imagefolder:/data/cifar")
    preset = PRESETS["cpu"]
    assert args.depths == preset.depths and args.seeds == preset.seeds >= 2
    cells = grid(config_from_args(args), ["plain", "resnet"], args.depths, list(range(args.seeds)))
    assert len(cells) == 2 * len(preset.depths) * preset.seeds
    for cfg in cells:
        for name, value in preset.train.items():
            assert getattr(cfg, name) == value, name
    # Apart from the grid's own keys (arch, depth, seed), every setting is the same in every cell.
    recipe = lambda c: {k: v for k, v in dataclasses.asdict(c).items() if k not in ("arch", "depth", "seed")}  # noqa: E731
    assert all(recipe(c) == recipe(cells[0]) for c in cells)
    # The paper's protocol stays the default without --preset.
    plain = config_from_args(args_for("experiment", "degradation"))
    assert (plain.schedule, plain.linear_warmup, plain.image_size, plain.iterations) == ("step", 0, None, None)


def test_options_typed_on_the_command_line_win_over_the_preset():
    args = args_for("experiment", "degradation", "--preset", "cpu", "--image-size", "24", "--seeds", "3")
    assert args.image_size == 24 and args.seeds == 3 and args.iterations == PRESETS["cpu"].train["iterations"]
    args = args_for("experiment", "degradation", "--preset=cpu", "--epochs", "2")
    assert args.epochs == 2 and args.iterations is None  # the length chosen another way
    config_from_args(args).validate()


def test_crossover_is_where_the_deeper_net_stays_below():
    shallow = [(100, 0.9), (200, 0.6), (300, 0.5), (400, 0.4), (500, 0.35)]
    assert crossover([(100, 0.95), (200, 0.55), (300, 0.52), (400, 0.38), (500, 0.3)], shallow) == 400
    assert crossover([(100, 0.8), (200, 0.5), (300, 0.4), (400, 0.3), (500, 0.2)], shallow) == 100
    assert crossover([(100, 0.8), (200, 0.5), (300, 0.4), (400, 0.3), (500, 0.35)], shallow) is None  # a tie at the end
    assert crossover([(100, 0.95), (200, 0.9), (300, 0.9), (400, 0.9), (500, 0.9)], shallow) is None


def test_crossovers_of_an_experiment(tmp_path):
    from test_experiment import fake_run

    from reslab.runs import load_runs

    for s in (0, 1):
        fake_run(tmp_path, "plain", 20, s, [0.8, 0.5, 0.3], 0.3)
        fake_run(tmp_path, "plain", 56, s, [0.9, 0.7, 0.6], 0.6)
        fake_run(tmp_path, "resnet", 20, s, [0.8, 0.5, 0.3], 0.3)
        fake_run(tmp_path, "resnet", 56, s, [0.9, 0.45 + 0.1 * s, 0.2], 0.2)
    found = {(c["arch"], c["shallow"], c["deep"]): c for c in crossovers(load_runs(tmp_path))}
    assert found[("plain", 20, 56)]["iteration"] is None
    res = found[("resnet", 20, 56)]
    assert res["iteration"] == 30 and res["per_seed"] == {0: 20, 1: 30} and res["seeds"] == [0, 1]
    from reslab.report import build_report

    html = build_report(tmp_path)
    assert "Crossovers: when the deeper net trains better" in html and "seed 1: 30" in html
    assert "Error against depth" not in html or (tmp_path / "figures" / "error_vs_depth.png").exists()
    assert (tmp_path / "figures" / "reach_vs_depth.png").exists()


def test_responses_of_untrained_scales_are_marked_not_testable():
    from reslab.analysis.responses import findings
    from reslab.verdicts import mark

    def net(arch, depth, std, gamma):
        return {"arch": arch, "depth": depth, "layers": [{"std": std, "std_per_channel": std, "gamma": gamma}] * 3}

    fresh = findings([net("plain", 20, 1.0, 1.0), net("resnet", 20, 0.99, 1.02), net("resnet", 56, 1.0, 0.97)])
    assert [f["testable"] for f in fresh] == [False, False] and all(f["holds"] is None for f in fresh)
    assert "reslab import" in fresh[0]["text"] and "64k iterations" in fresh[0]["text"]
    assert mark(fresh[0]["holds"], fresh[0]["testable"]) == "not testable here"
    trained = findings([net("plain", 20, 0.9, 0.8), net("resnet", 20, 0.5, 0.5), net("resnet", 56, 0.3, 0.3)])
    assert [f["holds"] for f in trained] == [True, True] and not any("testable" in f for f in trained)


def test_responses_of_briefly_trained_nets_are_not_testable_whatever_their_scales_did():
    from reslab.analysis.responses import FIG7_ITERATIONS, findings

    def net(arch, depth, std, iterations):
        layers = [{"std": std, "std_per_channel": std, "gamma": 0.5, "gamma_init": 1.0}] * 3
        return {"arch": arch, "depth": depth, "iterations": iterations, "layers": layers}

    demo = findings([net("plain", 20, 0.7, 110), net("resnet", 20, 0.5, 110), net("resnet", 56, 0.3, 110)])
    assert [f["testable"] for f in demo] == [False, False] and all(f["holds"] is None for f in demo)
    assert "these trained 110 iterations, under the 32,000" in demo[0]["text"] and "reslab import" in demo[0]["text"]
    assert "(Measured: Mean std over layers, depth 20: ResNet 0.500 vs plain 0.700" in demo[0]["text"]
    mixed = findings([net("plain", 20, 0.7, 2000), net("resnet", 20, 0.5, FIG7_ITERATIONS)])
    assert "these trained 2,000 to 32,000 iterations" in mixed[0]["text"]
    long = findings([net("plain", 20, 0.7, 64000), net("resnet", 20, 0.5, 64000), net("resnet", 56, 0.3, None)])
    assert [f["holds"] for f in long] == [True, True] and not any("testable" in f for f in long)


def test_responses_compare_bn_scales_with_their_own_initial_values():
    """Nets started with --block-gamma 0.3 whose scales have not moved are untrained too; their
    scales are far from 1, so only the initial value recorded per layer tells."""
    from reslab.analysis.responses import findings, layer_responses
    from reslab.models import ModelConfig, build_model

    def net(arch, depth):
        torch.manual_seed(depth)
        m = build_model(ModelConfig(arch, depth, in_channels=1))
        with torch.no_grad():
            m.scale_block_gamma(0.3)
        layers = layer_responses(m, torch.randn(20, 1, 8, 8), block_gamma=0.3)
        return m, {"arch": arch, "depth": depth, "layers": layers}

    nets = [net("plain", 8), net("resnet", 8), net("resnet", 14)]
    layers = nets[1][1]["layers"]
    assert [ly["gamma_init"] for ly in layers] == [1.0] + [1.0, 0.3] * 3
    assert all(ly["gamma"] == pytest.approx(ly["gamma_init"]) for ly in layers)
    fresh = findings([r for _, r in nets])
    assert [f["testable"] for f in fresh] == [False, False] and "initial values" in fresh[0]["text"]
    for m, r in nets:  # training has moved every scale by a third
        with torch.no_grad():
            for mod in m.modules():
                if isinstance(mod, torch.nn.BatchNorm2d):
                    mod.weight.mul_(1.35)
        r["layers"] = layer_responses(m, torch.randn(20, 1, 8, 8), block_gamma=0.3)
    assert not any("testable" in f for f in findings([r for _, r in nets]))


def test_figure_titles_name_dataset_budget_and_seeds(tmp_path):
    from test_experiment import fake_run

    from reslab.plots import figure_title
    from reslab.runs import load_runs

    fake_run(tmp_path, "plain", 20, 0, [0.5, 0.1], 0.1)
    fake_run(tmp_path, "plain", 20, 1, [0.5, 0.1], 0.1)
    assert figure_title(load_runs(tmp_path)) == "digits (8x8), 10 training images, 20 iterations, seeds 0, 1"


def test_preset_deviations_are_named_in_the_report(tmp_path):
    from test_experiment import fake_run

    from reslab.report import build_report

    d = fake_run(tmp_path, "plain", 20, 0, [0.5, 0.1], 0.1)
    config = files.read_json(d / "config.json")
    config["train"].update(PRESETS["cpu"].train, image_size=24)  # the user chose another image size
    files.write_json(d / "config.json", config)
    record = {"kind": "degradation", "preset": "cpu", "cells": [d.name], "recipe": recipe(config["train"])}
    files.write_json(tmp_path / "experiment.json", record)
    html = build_report(tmp_path)
    assert "Recipe: the cpu preset" in html
    for dev in PRESETS["cpu"].deviations:
        assert (dev.preset in html) == (dev.setting != "image size"), dev.setting


def test_torch_init_shrinks_the_conv_weights_and_is_seeded(tmp_path):
    from reslab.train import setup

    def conv_norm(init, seed=0):
        cfg = TrainConfig(arch="plain", depth=8, dataset="synthetic", init=init, seed=seed, iterations=1, device="cpu")
        run, config = setup(cfg, tmp_path / init)
        w = [p for n, p in run.model.named_parameters() if "conv" in n]
        return sum(float((p.detach() ** 2).sum()) for p in w), config

    he, _ = conv_norm("he")
    torch_, config = conv_norm("torch")
    assert 4 < he / torch_ < 8  # PyTorch's default: about 1/6 of He init's squared norm
    assert conv_norm("torch")[0] == torch_ and conv_norm("torch", seed=1)[0] != torch_
    assert config.train.init == "torch"


def test_block_gamma_reaches_every_blocks_last_bn_and_config_json(tmp_path, capsys):
    from reslab.train import setup

    for arch in ("plain", "resnet"):
        cfg = TrainConfig(arch=arch, depth=14, dataset="synthetic", block_gamma=0.3, iterations=1, device="cpu")
        run, config = setup(cfg, tmp_path / arch)
        assert all(bool((b.last_bn.weight == 0.3).all()) for b in run.model.blocks())
        assert config.train.block_gamma == 0.3
        # Only the last BN of each block: the first keeps BN's default scale of 1.
        assert all(bool((b.bn1.weight == 1).all()) for b in run.model.blocks())
    refused(capsys, ["train", "--block-gamma", "-1", "--out", tmp_path / "z"], "--block-gamma", "at least 0")
    refused(
        capsys, ["train", "--block-gamma", "nan", "--out", tmp_path / "z"], "--block-gamma", "must be a finite number"
    )
    TrainConfig(block_gamma=0.0).check_values()  # a zero start is allowed: a residual block then starts as x


def test_the_demo_trains_one_chosen_seed_alone(cli, tmp_path):
    out = tmp_path / "demo"
    r = cli("demo", "--seed", "3", "--depths", "8,14", "--epochs", "1", "--out", out)
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in out.glob("*-seed*")) == [
        "plain-14-seed3",
        "plain-8-seed3",
        "resnet-14-seed3",
        "resnet-8-seed3",
    ]
    assert "x seed 3 on digits" in r.stdout and "constructed plain-14 from plain-8" in r.stdout
    # The CPU preset's recipe, the same for every net: a linear warm-up over 10% of the run
    # (1 epoch of 11 iterations here: 1 of them), a cosine, every block's last BN at 0.3.
    from reslab import runs

    trains = [runs.read_config(d).train for d in out.glob("*-seed3")]
    assert {(t.schedule, t.block_gamma, t.linear_warmup, t.warmup, t.epochs) for t in trains} == {
        ("cosine", PRESETS["cpu"].train["block_gamma"], 1, "off", 1.0)
    }


def test_cuda_graphs_stay_off_when_the_lr_changes_every_step(tmp_path):
    from reslab.errors import UserError
    from reslab.train import setup

    cosine = dict(dataset="synthetic", iterations=2, device="cpu", schedule="cosine")
    with pytest.raises(UserError, match="step schedule"):
        TrainConfig(cuda_graphs="on", **cosine).validate()
    run, config = setup(TrainConfig(cuda_graphs="auto", **cosine), tmp_path / "r")
    assert run.cuda_graphs is False and config.resolved.cuda_graphs is False
