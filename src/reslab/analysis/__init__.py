"""The analyses of why residual learning works. Each is one module here with its computation and,
at its end, its command: HELP, SLOW (whether it shows a progress bar), add_args(parser),
command(args) -> (result, output directory), summary(result) -> the lines printed, Result (the
fields of its analyses/NAME.json, checked when written and read), its figure, and
section(result, exp_dir) -> its HTML in the report. Adding one is adding its
module and its name below."""

from __future__ import annotations

import importlib

NAMES = ("responses", "construct", "identity", "lesion", "gradients", "landscape")


def load(name: str):
    """The module of an analysis (imported on use: they bring torch and matplotlib)."""
    if name not in NAMES:
        from reslab.errors import UserError

        raise UserError(f"unknown analysis '{name}': choose one of {', '.join(NAMES)}.")
    return importlib.import_module(f"reslab.analysis.{name}")
