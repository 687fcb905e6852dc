"""What the files reslab reads back may hold: every value's type, range, finiteness and size.

A run directory may have been edited, damaged or written by another program; these checks run
on every value before it is used, so damage costs one sentence, never a traceback or a verdict
built on an impossible number.
"""

from __future__ import annotations

import math
import re

from reslab.config import TrainConfig
from reslab.errors import UserError

# Bounds no file of reslab's comes near: deeper nesting, longer text or lists are damage.
MAX_DEPTH, MAX_TEXT, MAX_ITEMS = 32, 10_000, 1_000_000


def is_count(v) -> bool:
    """A whole number from 0 up, as JSON gives it (not a bool)."""
    return type(v) is int and 0 <= v < 2**63


def is_number(v) -> bool:
    """A finite int or float, as JSON gives it (not a bool)."""
    return type(v) in (int, float) and math.isfinite(v)


def sane(value, depth: int = 0) -> str | None:
    """Why a JSON value cannot be one reslab wrote (too deep, too long, not finite), or None."""
    if depth > MAX_DEPTH:
        return "nested too deeply"
    if isinstance(value, float) and not math.isfinite(value):
        return f"holds {value}"
    if isinstance(value, str) and len(value) > MAX_TEXT:
        return f"holds a text of {len(value):,} characters"
    if isinstance(value, (list, dict)):
        if len(value) > MAX_ITEMS:
            return f"holds {len(value):,} items"
        items = value.values() if isinstance(value, dict) else value
        return next((why for v in items if (why := sane(v, depth + 1))), None)
    return None


def check_row(row: dict, previous: dict | None, line: int) -> None:
    """A metrics row holds only numbers training can produce: finite, errors within [0, 1], the
    rest not negative, iterations whole and increasing (training never writes anything else)."""
    for k, v in row.items():
        if v is None:
            continue
        if not math.isfinite(v):
            raise ValueError(f"row {line} has {k} {v}")
        if k.endswith("_error") and not 0 <= v <= 1:
            raise ValueError(f"row {line} has {k} {v:g}, outside 0 to 1")
        if v < 0:
            raise ValueError(f"row {line} has a negative {k} ({v:g})")
    if row["iteration"] != int(row["iteration"]) or (previous and row["iteration"] <= previous["iteration"]):
        raise ValueError(f"row {line} has iteration {row['iteration']:g}, not a whole number after the last row's")


counts = lambda n=None: lambda v: isinstance(v, list) and (n is None or len(v) == n) and all(map(is_count, v))  # noqa: E731
text = lambda v: isinstance(v, str)  # noqa: E731
flag = lambda v: isinstance(v, bool)  # noqa: E731

# config.json's resolved and data sections: each key a reader uses, with the check its value must
# pass when present (parameters, macs and the dataset's name must be).
RESOLVED = {
    "parameters": is_count, "macs": is_count, "iterations": is_count, "eval_every": is_count,
    "steps_per_epoch": is_count, "batch_size": is_count, "batch_per_process": is_count, "processes": is_count,
    "augment_pad": is_count, "milestones": counts(), "epochs": lambda v: is_number(v) and v >= 0,
    "precision": lambda v: v in ("fp32", "bf16"), "augment": flag, "warmup": flag, "compile": flag,
    "cuda_graphs": flag, "batchnorm": text, "normalization": lambda v: isinstance(v, dict),
}  # fmt: skip
DATA = {
    "name": text, "source": text, "classes": lambda v: isinstance(v, list) and 0 < len(v) and all(map(text, v)),
    "image_shape": counts(3), "resized_from": counts(2), "train_size": is_count, "val_size": is_count,
    "test_size": is_count,
}  # fmt: skip


# What an imported network may not know: how long it trained, on how many images.
UNKNOWN_OK = ("iterations", "train_size", "test_size")


def wrong_fields(section: str, values: dict, checks: dict) -> list[str]:
    """The keys of a config.json section whose value fails its check."""
    ok = lambda k: checks[k](values[k]) or (values[k] is None and k in UNKNOWN_OK)  # noqa: E731
    return [f"{section}.{k}" for k in checks if k in values and not ok(k)]


CELL_NAME = re.compile(r"[a-z][a-z0-9-]*-[0-9]+-seed[0-9]+")
EXPERIMENT_KINDS = ("demo", "degradation")
# experiment.json: what was asked (kind, grid, recipe). Every key, with the check its value must pass.
EXPERIMENT_FIELDS = {
    "kind": lambda v: v in EXPERIMENT_KINDS,
    "cells": lambda v: (
        isinstance(v, list) and 0 < len(v) <= 100_000 and all(isinstance(c, str) and CELL_NAME.fullmatch(c) for c in v)
    ),
    "recipe": lambda v: isinstance(v, dict) and valid_recipe(v),
    "archs": lambda v: isinstance(v, str) and len(v) < 1000,
    "dataset": lambda v: isinstance(v, str) and len(v) < 5000,
    "depths": lambda v: isinstance(v, list) and len(v) < 1000 and all(is_count(d) for d in v),
    "seeds": lambda v: is_count(v) or isinstance(v, list) and len(v) < 10_000 and all(is_count(d) for d in v),
    "epochs": lambda v: v is None or type(v) in (int, float) and math.isfinite(v) and v > 0,
    "subset": lambda v: v is None or is_count(v),
    "preset": lambda v: isinstance(v, str) and len(v) < 100,
    "command": lambda v: isinstance(v, str) and len(v) <= 2000,
}


def valid_recipe(recipe: dict) -> bool:
    try:
        train = TrainConfig.from_dict(recipe)
        train.check_types()
        train.check_values()
        return True
    except (UserError, TypeError):
        return False


def wrong_experiment_fields(record: dict) -> list[str]:
    """What makes `record` not an experiment.json of reslab's (empty when it is one)."""
    missing = sorted({"kind", "cells", "recipe"} - set(record))
    bad = sorted(k for k, v in record.items() if k not in EXPERIMENT_FIELDS or not EXPERIMENT_FIELDS[k](v))
    return [f"{k} missing" for k in missing] + bad
