"""The run directory as a schema (issue 16): RunConfig reads what reslab writes and refuses what
it would not, write_run writes nothing of an invalid configuration, and runs of the previous
layout still read and resume."""

import dataclasses
import json
import shutil

import pytest
from conftest import small as conftest_small
from conftest import tiny_data

from reslab import runs
from reslab.errors import UserError
from reslab.models import ModelConfig, build_model
from reslab.train import setup, train


def small(**kw):
    return conftest_small(**{"iterations": 12, **kw})


def test_a_config_reads_back_as_it_was_written(tmp_path):
    _, config = setup(small(), tmp_path / "r", tiny_data())
    again = runs.RunConfig.from_json(json.loads(json.dumps(config.to_json())), tmp_path / "config.json")
    assert again == config
    assert (again.model.depth, again.train.seed, again.dataset) == (8, 0, "synthetic")
    assert again.parameters == config.resolved.parameters > 0


@pytest.mark.parametrize(
    "section, key, value, phrase",
    [
        ("train", "lr", "fast", "train.lr: expected `float`, got `str`"),
        ("train", "lr", -1.0, "train section is not valid"),
        ("train", "colour", "red", "train: object contains unknown field `colour`"),
        ("model", "depth", "8", "model.depth: expected `int`, got `str`"),
        ("model", "depth", 0, "model.depth: expected `int` >= 1"),
        ("model", "shortcut", "D", "model.shortcut: expected `str` matching regex"),
        ("model", "arch", "vgg", "model.arch 'vgg' is not a network reslab builds"),
        ("model", "layers", 3, "model: object contains unknown field `layers`"),
        ("resolved", "parameters", 1.5, "resolved.parameters: expected `int`, got `float`"),
        ("data", "name", None, "data.name: expected `str`, got `null`"),
        ("resolved", "colour", 1, "resolved: object contains unknown field `colour`"),
        ("data", "colour", 1, "data: object contains unknown field `colour`"),
        ("resolved", "milestones", [1, "2"], "resolved.milestones\\[1\\]: expected `int`, got `str`"),
    ],
)
def test_a_damaged_field_is_one_sentence_and_nothing_is_written(tmp_path, section, key, value, phrase):
    _, config = setup(small(), tmp_path / "r", tiny_data())
    d = config.to_json()
    d[section] = {**(dataclasses.asdict(config.train) if section == "train" else d[section]), key: value}
    with pytest.raises(UserError, match=phrase):
        runs.RunConfig.from_json(d, tmp_path / "config.json")
    bad = dataclasses.replace(config, model=dataclasses.replace(config.model, depth="8"))
    with pytest.raises(UserError, match="model.depth"):
        runs.write_run(tmp_path / "out", bad, build_model(ModelConfig("resnet", 8)), ("finished", ""))
    assert not (tmp_path / "out").exists()  # validated before the weights or the status were written


def test_runs_of_the_previous_layout_read_and_resume(tmp_path):
    """config.json of the previous reslab has no cuda_graphs setting: it reads (the default), is
    not taken for a run trained otherwise, and resumes."""
    data = tiny_data()
    out = tmp_path / "r"
    train(small(iterations=24), out, data=data, progress=False)
    d = json.loads((out / "config.json").read_text())
    del d["train"]["cuda_graphs"], d["resolved"]["cuda_graphs"]
    (out / "config.json").write_text(json.dumps(d))
    runs.write_status(out, "interrupted")  # as if stopped before its end
    shutil.rmtree(out / ".reslab")  # nor did it keep records of what it wrote: its run files are adopted
    assert runs.load_run(out).config.train.cuda_graphs == "auto"
    row = train(small(iterations=24), out, resume=True, data=data, progress=False)
    assert row["iteration"] == 24 and runs.read_status(out)["state"] == "finished"
