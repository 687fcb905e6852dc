"""The 1,797 UCI 8x8 handwritten digits that ship inside reslab (datasets/digits.csv.gz; its
origin and licence in datasets/README.md): no download."""

from __future__ import annotations

import functools
import gzip
import io
from pathlib import Path

import numpy as np

from reslab import files
from reslab.data.dataset import Dataset, make_dataset

DIGITS_FILE = Path(__file__).resolve().parents[1] / "datasets" / "digits.csv.gz"  # origin, licence: README.md there


@functools.cache  # the analyses load it once per network
def digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """The 1,797 UCI handwritten digits that ship with reslab, as (images 0..16, labels), read-only."""
    packed = files.read_regular(DIGITS_FILE, 2**20, "dataset file", follow=True)
    table = np.loadtxt(io.BytesIO(gzip.decompress(packed)), delimiter=",")
    images, labels = table[:, :-1].reshape(-1, 8, 8), table[:, -1].astype(np.int64)
    images.setflags(write=False)
    labels.setflags(write=False)
    return images, labels


def load_digits() -> Dataset:
    """The 1,797 real 8x8 handwritten digits (UCI), split 1,438 / 359 (stratified, fixed)."""
    raw, labels = digits_arrays()
    images = np.round(raw * (255 / 16)).astype(np.uint8)[:, None]
    rng = np.random.default_rng(0)
    test = np.zeros(len(labels), dtype=bool)
    for c in range(10):
        idx = np.flatnonzero(labels == c)
        test[rng.permutation(idx)[: round(0.2 * len(idx))]] = True
    return make_dataset(
        "digits",
        images[~test],
        labels[~test],
        images[test],
        labels[test],
        [str(i) for i in range(10)],
        augment=False,
        info={"source": "UCI optical recognition of handwritten digits (shipped with reslab)"},
    )


def digits_where(name: str, data_dir: Path) -> str:
    return "available (ships with reslab: 1,797 8x8 UCI digits, no download)"
