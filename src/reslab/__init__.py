"""reslab: a laboratory for residual networks (He et al. 2016).

The library in a few names (each imported on first use, so ``import reslab`` stays light):

- ``TrainConfig``: a run's training settings (the CLI's options, with the same names).
- ``train_run(config, out)``: train one network into the run directory ``out``.
- ``load_run(run_dir)``: a run directory read back (``RunRecord``: config, metrics, status).
- ``load_model(run_dir)``: a run's trained network (an ``nn.Module`` in eval mode, on the CPU).
- ``gather(exp_dir)``: the runs of an experiment that belong together, and those left out.
- ``summarize(runs)``: Table-6 rows (mean and std over seeds) of runs.
- ``judge(runs)``: the paper's claims judged on runs (yes, NO, unclear, not testable).
- ``analysis.load(name)``: an analysis module (``analysis.NAMES``: responses, construct, identity,
  lesion, gradients, landscape); its ``analyze(...)`` measures, its ``plot(...)`` draws.
- ``figures``: the experiment figures; each returns a matplotlib ``Figure`` without a path, or
  writes PNG and SVG with one.

See docs/library.md for a worked example.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import TYPE_CHECKING

from reslab._version import __version__

if TYPE_CHECKING:  # what a type checker sees; at run time each is imported on first use
    import torch

    from reslab import analysis
    from reslab import plots as figures
    from reslab.config import TrainConfig
    from reslab.runs import RunRecord, gather, load_run
    from reslab.verdicts import Verdict

__all__ = [
    "__version__",
    "TrainConfig",
    "train_run",
    "load_run",
    "load_model",
    "gather",
    "summarize",
    "judge",
    "analysis",
    "figures",
]

# name -> (module, attribute): what the package exposes, loaded when first asked for.
_LAZY = {
    "TrainConfig": ("reslab.config", "TrainConfig"),
    "load_run": ("reslab.runs", "load_run"),
    "gather": ("reslab.runs", "gather"),
    "figures": ("reslab.plots", None),
    "analysis": ("reslab.analysis", None),  # the subpackage: analysis.load(name), analysis.NAMES
}


def train_run(config: TrainConfig, out: str | Path, resume: bool = False, progress: bool | None = False) -> dict:
    """Train the network `config` describes into the run directory `out`, or continue it there
    with `resume`; returns the last metrics row. What it says goes to the "reslab" logger
    (reslab.log). Raises reslab.errors.UserError for bad settings, with a sentence that says why."""
    from reslab.train import train

    return train(config, out, resume=resume, progress=progress)


def load_model(run_dir: str | Path) -> torch.nn.Module:
    """The trained network of a run directory (its final weights, or its last checkpoint's), in
    eval mode on the CPU; its inputs are normalised as reslab.evaluate.normalization says."""
    from reslab.evaluate import load_run_model

    return load_run_model(Path(run_dir))[0]


def summarize(runs: list[RunRecord]) -> list[dict]:
    """Table-6 rows of `runs` (RunRecords, e.g. from gather): one per architecture and depth, with
    the mean and standard deviation over seeds of the final training and test error."""
    from pathlib import Path

    from reslab.summary import summarize as rows

    return rows(Path("."), all_runs=runs)  # the folder is read only when no runs are given


def judge(runs: list[RunRecord]) -> list[Verdict]:
    """The paper's claims judged on `runs` (RunRecords): each a Verdict with .claim, .holds (True,
    False or None for unclear), .testable and .text (the measurement behind it)."""
    from reslab.verdicts import degradation_verdicts

    return degradation_verdicts(summarize(runs), runs)


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module 'reslab' has no attribute {name!r}")
    module, attribute = _LAZY[name]
    loaded = importlib.import_module(module)
    return loaded if attribute is None else getattr(loaded, attribute)
