"""`reslab experiment init`: how near the identity a residual net starts decides whether depth
helps. The paper's argument (Sec. 3.1): if the optimal function is closer to an identity than to
a zero mapping, a solver finds it more easily as a perturbation of the identity. Every block's
last BN starts at scale g (--block-gamma); in a residual block that scales F(x) against the
shortcut, so g = 0 starts the net as the identity on its stem's output (the zero-initialised last
BN of Goyal et al. 2017), while in a plain block the next BN undoes the scale, and g = 0 passes no
signal at all.

The experiment is a degradation grid (plain and residual, two depths, seeds) at each scale, each
an ordinary experiment directory OUT/scale-G (re-runs skip finished cells), then the measurements
of how far each residual block is from the identity at initialisation and after training
(branches.py), verdicts, figures and OUT/report.html.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Annotated, Any

import msgspec

from reslab.errors import UserError
from reslab.schema import Count, Name, NonNegative, Record, Text, Verdict, convert

SCALES = (1.0, 0.3, 0.1, 0.0)
MEASURED_IMAGES = 256  # the fixed batch the branches are measured on
# What `experiment init` changes of the experiment's defaults (a preset or typed options win).
DEFAULTS = {"depths": [20, 56], "out": "runs/init"}
OWN = {"init.json", "report.html", "figures"}  # what reslab writes at the top of OUT


class InitRecord(Record):
    """OUT/init.json: the grid, every run's measurements (rows of study(); not read back) and the verdicts."""

    scales: Annotated[list[NonNegative], msgspec.Meta(min_length=1)]
    archs: list[Name]
    depths: list[Count]
    seeds: list[Count]
    runs: list[dict[str, Any]]
    title: Text
    verdicts: list[Verdict]


def scale_dir(out: Path, scale: float) -> Path:
    return Path(out) / f"scale-{scale:g}"


def check_out(out: Path) -> None:
    """OUT holds nothing but this experiment's own files and scale folders (or is new)."""
    from reslab import files

    if files.is_link(out):
        raise UserError(f"{out} is a symbolic link; reslab never writes through one. Choose another --out.")
    if not out.exists():
        return
    if not out.is_dir():
        raise UserError(f"{out} is not a directory; choose another --out.")
    foreign = [p.name for p in out.iterdir() if p.name not in OWN and not p.name.startswith("scale-")]
    foreign = [n for n in foreign if n not in (".lock", files.RECORDS) and not n.startswith(files.TMP_PREFIX)]
    if foreign:
        raise UserError(
            f"{out} holds files that are not an init experiment's ({', '.join(sorted(foreign)[:3])}); "
            "choose a new or empty --out."
        )


def run(
    out: Path,
    base,
    archs: list[str],
    depths: list[int],
    seeds: list[int],
    scales: list[float],
    spec: dict,
    backend=None,
    overwrite: bool = False,
) -> dict:
    """Train every scale's grid, measure, judge, draw and report; returns what was found."""
    from reslab.experiment import report, run_grid

    out = Path(out)
    if not scales or any(not (0 <= s < 100) for s in scales):
        raise UserError(f"--scales must be numbers from 0 to below 100, got {scales}.")
    if len(depths) < 2:
        raise UserError("experiment init compares two depths at each scale: give --depths with two or more.")
    check_out(out)
    from reslab import files
    from reslab.init_figures import FIGURES

    files.check_outputs(
        out, ["init.json", "report.html", *(f"figures/{n}{e}" for n in FIGURES for e in (".png", ".svg"))]
    )
    grids = {}
    for scale in scales:
        cfg = dataclasses.replace(base, block_gamma=scale)
        grids[scale] = report(
            scale_dir(out, scale), run_grid(scale_dir(out, scale), cfg, archs, depths, seeds, spec, backend, overwrite)
        )
    found = {"scales": scales, "archs": archs, "depths": depths, "seeds": seeds, **study(out, scales)}
    from reslab import files

    convert(found, InitRecord)  # as a resume will read it
    files.write_json(out / "init.json", found)
    found["report"] = write_report(out, found)
    found["grids"] = grids
    return found


def study(out: Path, scales: list[float]) -> dict:
    """Every run's final errors and its branches at initialisation and at the end, and the verdicts."""
    from reslab import runs
    from reslab.plots import figure_title

    rows, title = [], ""
    for scale in scales:
        records = runs.gather(scale_dir(out, scale))[0]
        title = title or figure_title(records)
        for r in records:
            if r.state == "finished" and r.metrics:
                rows.append(
                    {
                        "scale": scale,
                        "arch": r.arch,
                        "depth": r.depth,
                        "seed": r.seed,
                        "label": r.label,
                        "train_error": r.final["train_error"],
                        "test_error": r.final["test_error"],
                        "train_loss": r.final["train_loss"],
                        "classes": len(r.config.data.classes),
                        "curve": curve(r.metrics),
                        **branches_of(r),
                    }
                )
    from reslab.init_verdicts import judge

    return {"runs": rows, "title": title, "verdicts": [dataclasses.asdict(v) for v in judge(rows, scales)]}


def curve(metrics: list[dict]) -> list[list[float]]:
    return [[m["iteration"], m["train_error"], m["test_error"]] for m in metrics]


def branches_of(r) -> dict:
    """A run's blocks at initialisation (rebuilt from its seed) and after training, on a fixed
    batch of its training images."""
    import torch

    from reslab import branches
    from reslab.analysis.common import load_split
    from reslab.evaluate import normalization, normalize
    from reslab.train import initial_model

    run = load_split(r.dir, "train", MEASURED_IMAGES)
    mean, std = normalization(run.config)
    x = normalize(run.x, mean, std)
    start = initial_model(run.config.train, run.config.model)
    at_start = branches.measure(start, x, train_mode=True)
    with torch.no_grad():
        at_end = branches.measure(run.model, x, train_mode=False)
    return {
        "init": at_start,
        "end": at_end,
        "init_ratio": branches.mean_ratio(at_start),
        "end_ratio": branches.mean_ratio(at_end),
        "init_signal": at_start["signal"],
    }


def write_report(out: Path, found: dict) -> Path:
    """OUT/report.html: verdicts, the table, the figures, each scale's own report linked."""
    from reslab import init_figures
    from reslab.files import atomic_write_text

    figures = init_figures.draw_all(out, found)
    atomic_write_text(out / "report.html", init_figures.page(out, found, figures))
    return out / "report.html"
