"""CIFAR-10 and CIFAR-100: the official python-pickle batches, downloaded and md5-checked on
first use, read with an unpickler that rebuilds numpy arrays and nothing else."""

from __future__ import annotations

import logging
import os
import pickle
import tarfile
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from reslab import files
from reslab.data.dataset import Dataset, make_dataset
from reslab.data.download import download, md5_of, safe_extract
from reslab.errors import UserError

CIFAR: dict[str, dict[str, Any]] = {
    "cifar10": {
        "folder": "cifar-10-batches-py",
        "url": "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
        "md5": "c58f30108f718f92721af3b95e74349a",
        "train": [f"data_batch_{i}" for i in range(1, 6)],
        "test": ["test_batch"],
        "label_key": b"labels",
        "meta": ("batches.meta", b"label_names"),
    },
    "cifar100": {
        "folder": "cifar-100-python",
        "url": "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
        "md5": "eb9058c3a382ffc7106e4002c42a8d85",
        "train": ["train"],
        "test": ["test"],
        "label_key": b"fine_labels",
        "meta": ("meta", b"fine_label_names"),
    },
}

# A CIFAR batch is about 31 MB, the archive about 170 MB.
MAX_BATCH_BYTES = 2**28
MAX_ARCHIVE_BYTES = 2**31


def read_pickle_batch(path: Path) -> dict:
    """One CIFAR pickle batch. Only plain dicts of lists/arrays are accepted (see find_class)."""
    if not path.exists():
        raise UserError(f"{path} is missing: the CIFAR folder is incomplete; delete it and download again.")
    try:
        with files.open_regular(path, MAX_BATCH_BYTES, "CIFAR batch", follow=True) as f:
            return SafeNumpyUnpickler(f, encoding="bytes").load()
    except UserError:
        raise
    except Exception as e:
        raise UserError(f"{path} is not a readable CIFAR batch ({type(e).__name__}: {e}); replace the file.") from None


class SafeNumpyUnpickler(pickle.Unpickler):
    """CIFAR batches hold numpy arrays; allow exactly what rebuilds them and nothing else."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
    }

    def find_class(self, module: str, name: str):
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise UserError(f"refusing to load {module}.{name} from a data file: it is not CIFAR data.")


def cifar_batch_arrays(batch: dict, label_key: bytes, path: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        data = np.asarray(batch[b"data"], dtype=np.uint8)
        labels = np.asarray(batch[label_key], dtype=np.int64)
    except (KeyError, TypeError, ValueError) as e:
        raise UserError(f"{path} lacks the CIFAR fields data/labels ({e}); replace the file.") from None
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise UserError(f"{path}: expected rows of 3072 bytes (3x32x32), got shape {data.shape}; replace the file.")
    return data.reshape(-1, 3, 32, 32), labels


def locate_cifar(name: str, data_dir: Path) -> Path | None:
    """The unpacked CIFAR folder in data_dir, if it is there."""
    spec = CIFAR[name]
    return next((c for c in (data_dir / spec["folder"], data_dir) if (c / spec["test"][0]).exists()), None)


def find_cifar_folder(name: str, data_dir: Path, download_ok: bool) -> Path:
    spec = CIFAR[name]
    found = locate_cifar(name, data_dir)
    if found:
        return found
    archive = data_dir / Path(spec["url"]).name
    if not archive.exists():
        if not download_ok:
            raise UserError(
                f"{name} is not in {data_dir}. Put the folder '{spec['folder']}' there (unpacked from "
                f"{spec['url']}), or run without --no-download to fetch it."
            )
        logging.getLogger(__name__).info(f"downloading {spec['url']} to {archive} ...")
        download(spec["url"], archive, spec["md5"])
    elif md5_of(archive) != spec["md5"]:
        raise UserError(f"{archive} has the wrong checksum (expected md5 {spec['md5']}); delete it and run again.")
    with tempfile.TemporaryDirectory(dir=data_dir, prefix=".unpack-") as tmp:
        with (
            files.open_regular(archive, MAX_ARCHIVE_BYTES, "CIFAR archive", follow=True) as f,
            tarfile.open(fileobj=f) as tar,
        ):
            safe_extract(tar, Path(tmp))
        os.replace(Path(tmp) / spec["folder"], data_dir / spec["folder"])
    return data_dir / spec["folder"]


def load_cifar(name: str, data_dir: Path, download_ok: bool = True) -> Dataset:
    spec = CIFAR[name]
    folder = find_cifar_folder(name, data_dir, download_ok)
    splits = {}
    for split in ("train", "test"):
        parts = [cifar_batch_arrays(read_pickle_batch(folder / f), spec["label_key"], folder / f) for f in spec[split]]
        splits[split] = (np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]))
    meta_file, key = spec["meta"]
    meta = read_pickle_batch(folder / meta_file) if (folder / meta_file).exists() else {}
    classes = [c.decode() if isinstance(c, bytes) else str(c) for c in meta.get(key, [])]
    if not classes:
        classes = [str(i) for i in range(100 if name == "cifar100" else 10)]
    return make_dataset(name, *splits["train"], *splits["test"], classes, info={"source": str(folder)})


def cifar_where(name: str, data_dir: Path) -> str:
    found = locate_cifar(name, data_dir)
    if found:
        return f"available in {found}"
    return f"not downloaded (first use fetches {CIFAR[name]['url']} into {data_dir})"
