"""What every analysis needs: a run's network with its data, normalised as it was trained, and
a place to write results."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch

from reslab import files, runs, schema
from reslab.analysis import load
from reslab.config import SETTINGS
from reslab.errors import UserError, plural
from reslab.evaluate import load_run_model, normalization, normalize
from reslab.models import CifarNet, display


@dataclass
class LoadedRun:
    dir: Path
    model: CifarNet
    config: runs.RunConfig
    x: torch.Tensor  # normalised float images of the chosen split
    y: torch.Tensor

    label = property(lambda self: display(self.config.model.arch, self.config.model.depth))
    arch = property(lambda self: self.config.model.arch)
    depth = property(lambda self: self.config.model.depth)


def load_split(
    run_dir: Path,
    split: str = "test",
    limit: int | None = None,
    dataset: str | None = None,
    data_dir: str | None = None,
    seed: int = 0,
) -> LoadedRun:
    """A run's model (eval mode, CPU) and `limit` images of `split` (a fixed random choice)."""
    from reslab.data import load_dataset, prepare, resize

    model, config = load_run_model(run_dir)
    train_cfg = config.train
    ds = load_dataset(dataset or config.dataset, data_dir or train_cfg.data_dir, train_cfg.download)
    ds = resize(ds, train_cfg.image_size)  # the images at the size the network was trained on
    if split == "train":
        # The run's own training images (its subset and validation hold-out reproduced).
        ds = prepare(ds, train_cfg.subset, train_cfg.val_split, train_cfg.seed)
        x, y = ds.train_x, ds.train_y
    elif split == "test":
        x, y = ds.test_x, ds.test_y
    else:
        raise UserError(f"unknown split '{split}': use train or test.")
    if ds.image_shape[0] != config.model.in_channels:
        raise UserError(
            f"{ds.name} has {plural(ds.image_shape[0], 'channel')}, the network of {run_dir} expects "
            f"{config.model.in_channels}."
        )
    if limit and limit < len(y):
        idx = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))[:limit].sort().values
        x, y = x[idx], y[idx]
    mean, std = normalization(config)
    return LoadedRun(Path(run_dir), model, config, normalize(x, mean, std), y)


def outputs(name: str) -> list[str]:
    """The files analysis `name` writes, relative to its output folder: its JSON, and each figure
    its module's FIGURES names, as .png and .svg."""
    return [f"analyses/{name}.json"] + [f"figures/{f}{ext}" for f in load(name).FIGURES for ext in (".png", ".svg")]


def output_dir(run_dirs: list[Path], out: str | Path | None, name: str | None = None) -> Path:
    """Where an analysis writes: --out; else the experiment directory holding the runs; else, for
    one run of no experiment, that run's own directory. Never a folder reslab did not make: a
    standalone run's analysis must not land among other files (or runs) beside it. With the
    analysis's `name`, a file of the user's where it would write is refused before any work."""
    found = where(run_dirs, out)
    if name is not None:
        files.check_outputs(found, outputs(name))
    return found


def where(run_dirs: list[Path], out: str | Path | None) -> Path:
    if out:
        out = Path(out)
        if out.exists() and not out.is_dir():
            raise UserError(f"--out {out} is a file, not a directory.")
        return out
    parents = {Path(d).resolve().parent for d in run_dirs}
    if len(parents) == 1 and runs.owner(next(iter(parents))) == "experiment":
        return parents.pop()
    if len(run_dirs) == 1:
        return Path(run_dirs[0])
    raise UserError(
        "the runs are not the cells of one experiment directory; say where to write the results with --out."
    )


def write_result(out: Path, name: str, result: dict) -> Path:
    """OUT/analyses/NAME.json, checked against the analysis's Result as a reader will check it."""
    schema.convert(result, load(name).Result)
    path = files.own_folder(Path(out) / "analyses") / f"{name}.json"
    files.write_json(path, result)
    return path


def read_result(exp_dir: Path, name: str) -> dict | None:
    """OUT/analyses/NAME.json, every value checked against the analysis's Result (None: not there)."""
    path = Path(exp_dir) / "analyses" / f"{name}.json"
    if not os.path.lexists(path):
        return None
    result = files.read_json(path)
    schema.read(result, load(name).Result, path, f"Run reslab analyze {name} again with --overwrite to replace it.")
    return result


def progress_bar(total: int, desc: str):
    """A progress bar with ETA on the terminal (tqdm; silent when stderr is not one), for the
    analyses that take minutes. Call .update() per evaluation and .close() at the end."""
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="eval", disable=None, leave=False, dynamic_ncols=True)


def add_run_args(p, runs: bool = True) -> None:
    """The options of an analysis of run directories: the runs, their data, where to write."""
    if runs:
        p.add_argument("runs", nargs="+", help="run directories")
    p.add_argument("--dataset", help="dataset to use (default: each run's own)")
    p.add_argument("--data-dir", help=SETTINGS["data_dir"].metadata["help"])
    p.add_argument(
        "--out", help="directory to write analyses/ and figures/ into (default: the runs' experiment directory)"
    )


def caption(run_dirs: list[Path], images: int, split: str) -> str:
    """What an analysis figure measured: the nets' data, size, budget and seeds, and the images."""
    from reslab.plots import figure_title

    records = [runs.load_run(d) for d in run_dirs]
    trained = figure_title(records) or f"{records[0].config.dataset}, networks trained elsewhere"
    return f"{trained}; {images:,} {split} images"
