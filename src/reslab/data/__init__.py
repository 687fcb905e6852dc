"""Dataset sources. Each returns uint8 images [N, C, H, W] and int64 labels, held in memory.

Sources (the `--dataset` names), one module each: cifar10, cifar100 (cifar.py: python-pickle
folders, downloaded and checksum-verified on first use), mnist and fashion-mnist (idx.py: IDX
files, gzipped or not), imagefolder:PATH (folder.py: decoded once, cached beside the folder),
digits (digits.py: the UCI 8x8 digits that ship with reslab, no download) and synthetic
(synthetic.py: generated, for tests). dataset.py holds the Dataset they return, splits.py what a
run trains on, download.py the checked downloads. Adding a source is a module and a line in SOURCES.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from reslab.data.cifar import CIFAR, cifar_where, load_cifar
from reslab.data.dataset import DEFAULT_DATA_DIR, Dataset, make_dataset
from reslab.data.digits import DIGITS_FILE, digits_arrays, digits_where, load_digits
from reslab.data.download import download, md5_of, safe_extract
from reslab.data.folder import load_image_folder
from reslab.data.idx import IDX, idx_where, load_idx, read_idx
from reslab.data.splits import balanced_indices, check_sizes, prepare, resize
from reslab.data.synthetic import make_synthetic
from reslab.errors import UserError
from reslab.files import hashed

__all__ = [
    "CIFAR", "DATASETS", "DEFAULT_DATA_DIR", "DIGITS_FILE", "IDX", "SOURCES", "Dataset", "Source",
    "balanced_indices", "check_sizes", "describe_datasets", "digits_arrays", "download", "hashed",
    "load_dataset", "load_digits", "load_image_folder", "make_dataset", "make_synthetic", "md5_of",
    "prepare", "read_idx", "resize", "safe_extract",
]  # fmt: skip


def load_dataset(name: str, data_dir: str | Path | None = None, download_ok: bool = True) -> Dataset:
    data_dir = Path(data_dir) if data_dir else DEFAULT_DATA_DIR
    source = SOURCES.get(name.split(":", 1)[0] + ":" if name.startswith("imagefolder:") else name)
    if source is None:
        raise UserError(f"unknown dataset '{name}': choose one of {', '.join(DATASETS)}.")
    return source.load(name, data_dir, download_ok)


def describe_datasets(data_dir: str | Path | None = None) -> list[tuple[str, str]]:
    """(name, where it is or how it would be obtained) for every source."""
    data_dir = Path(data_dir) if data_dir else DEFAULT_DATA_DIR
    return [(name.replace(":", ":PATH"), source.where(name, data_dir)) for name, source in SOURCES.items()]


@dataclass(frozen=True)
class Source:
    """A kind of dataset: load(name, data_dir, download_ok) -> Dataset, and where(name, data_dir),
    what `reslab datasets` says of it."""

    load: Callable[[str, Path, bool], Dataset]
    where: Callable[[str, Path], str]


# Every dataset reslab reads; adding one is a loader and a line here.
SOURCES = {
    **{name: Source(load_cifar, cifar_where) for name in CIFAR},
    **{name: Source(load_idx, idx_where) for name in IDX},
    "digits": Source(lambda *_: load_digits(), digits_where),
    "synthetic": Source(lambda *_: make_synthetic(), lambda *_: "available (generated on the fly, for tests)"),
    "imagefolder:": Source(
        lambda name, *_: load_image_folder(Path(name.split(":", 1)[1]).expanduser()),
        lambda *_: "PATH/train/<class>/*.png|jpg and PATH/test/<class>/..., cached after decoding",
    ),
}
DATASETS = tuple(name.replace(":", ":PATH") for name in SOURCES)
