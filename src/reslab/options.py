"""Argument types for the command line's options (the CLI's and each analysis's own)."""

from __future__ import annotations

import argparse

DATA_DIR_HELP = "where datasets are found or downloaded (default ~/.cache/reslab/data, or $RESLAB_DATA)"
NO_DOWNLOAD_HELP = "never download; fail with a message if the data is missing"
DEVICE_HELP = "auto (a GPU if there is one, else the CPU), cpu, cuda or cuda:N; default %(default)s"


def positive_int(text: str, minimum: int = 1) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a whole number") from None
    if v < minimum:
        raise argparse.ArgumentTypeError(f"{v} must be positive" if minimum == 1 else f"{v} must be {minimum} or more")
    return v


def non_negative_int(text: str) -> int:
    return positive_int(text, minimum=0)


def int_list(text: str) -> list[int]:
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' must be comma-separated whole numbers, like 20,56") from None


def float_list(text: str) -> list[float]:
    try:
        return [float(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' must be comma-separated numbers, like 0.5,0.5,0.5") from None
