"""The architecture registry is the one place an architecture is named: a throwaway architecture,
registered with one line, trains, is counted, drawn, judged and extended like the paper's."""

import dataclasses

import pytest
import torch.nn.functional as F

import reslab
from reslab import models, runs, style
from reslab.analysis import construct
from reslab.cli import main
from reslab.config import TrainConfig
from reslab.errors import UserError
from reslab.plots import error_curves
from reslab.train import train


class ToyBlock(models.BasicBlock):
    """A residual block whose branch is scaled by a half: enough to be a new architecture."""

    def forward(self, x):
        branch = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        return F.relu(0.5 * branch + self.shortcut(x))


@pytest.fixture
def toy(monkeypatch):
    monkeypatch.setitem(models.ARCHS, "toy", models.Arch(ToyBlock, "Toy", "toy residual networks", "#17becf"))
    return "toy"


def test_a_registered_architecture_trains_counts_draws_and_is_judged(toy, tmp_path, capsys):
    cfg = TrainConfig(arch=toy, depth=8, dataset="digits", iterations=4, batch_size=32, device="cpu", precision="fp32")
    for depth in (8, 14):
        train(dataclasses.replace(cfg, depth=depth), tmp_path / f"toy-{depth}-seed0", progress=False)
    record = runs.load_run(tmp_path / "toy-8-seed0")
    assert record.label == "Toy-8" and record.config.resolved.parameters == 75_002  # plain-8's, no extra
    fig = error_curves(runs.load_runs(tmp_path))
    assert [ax.get_title() for ax in fig.axes[:1]] == ["toy residual networks"]
    assert style.colour(toy) == "#17becf" and style.colour(toy, 56) != style.colour(toy, 20)  # its own hue family
    found = reslab.judge(runs.load_runs(tmp_path))
    assert any(v.claim.startswith("Deeper Toy nets do not degrade") for v in found)  # residual: expected not to
    assert main(["models", "--depths", "8"]) == 0 and "toy (option A)" in capsys.readouterr().out
    deep, added = construct.construct_deeper(record_model(tmp_path / "toy-8-seed0"), 14)
    assert len(added) == 3  # ToyBlock is a BasicBlock with a shortcut: it knows how to become an identity


def record_model(run_dir):
    from reslab.evaluate import load_run_model

    return load_run_model(run_dir)[0].eval()


def test_an_unknown_architecture_is_named_by_one_lookup():
    with pytest.raises(UserError, match="unknown architecture 'toy': choose one of plain, resnet"):
        models.arch("toy")
    with pytest.raises(UserError, match="unknown architecture 'toy'"):
        TrainConfig(arch="toy").validate()


@pytest.mark.parametrize("name", list(models.ARCHS))
def test_each_architecture_has_its_default_shortcut_everywhere(name):
    spec = models.ARCHS[name]
    depth = 3 * spec.layers_per_block + 2
    cfg = TrainConfig(arch=name, depth=depth)
    cfg.validate()
    assert cfg.model_config(10, 3).shortcut == spec.default_shortcut
    built = models.build_model(cfg.model_config(10, 3))
    assert models.describe(built, (3, 32, 32))["parameters"] == models.count_parameters(built)


def test_a_constructed_run_records_its_own_counts_not_its_sources(tmp_path):
    from reslab.analysis import construct as construct_analysis

    source = tmp_path / "exp" / "plain-8-seed0"
    cfg = TrainConfig(arch="plain", depth=8, dataset="digits", iterations=4, batch_size=32, device="cpu")
    train(cfg, source, progress=False)
    construct_analysis.analyze(source, 20, out=tmp_path / "exp")
    built = runs.read_config(tmp_path / "exp" / "analyses" / "constructed" / "plain-20-from-8")
    own = models.describe(models.build_model(built.model), built.data.image_shape)
    assert (built.parameters, built.macs) == (own["parameters"], own["macs"])
    assert built.macs != runs.read_config(source).macs  # plain-8's would be wrong
    assert built.resolved.iterations is None and built.resolved.milestones == []  # it was not trained
