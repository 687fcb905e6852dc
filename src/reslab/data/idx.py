"""MNIST and Fashion-MNIST: the four IDX files (gzipped or not) in the data folder, Debian's
system copy, or downloaded and md5-checked."""

from __future__ import annotations

import gzip
import logging
import struct
from pathlib import Path
from typing import Any

import numpy as np

from reslab import files
from reslab.data.dataset import Dataset, make_dataset
from reslab.data.download import download
from reslab.errors import UserError

IDX: dict[str, dict[str, Any]] = {
    "mnist": {
        "url": "https://ossci-datasets.s3.amazonaws.com/mnist/",
        "system": None,
        "classes": [str(i) for i in range(10)],
    },
    "fashion-mnist": {
        "url": "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
        "system": Path("/usr/share/datasets/fashion-mnist"),
        "classes": [
            "T-shirt/top",
            "Trouser",
            "Pullover",
            "Dress",
            "Coat",
            "Sandal",
            "Shirt",
            "Sneaker",
            "Bag",
            "Ankle boot",
        ],
    },
}
IDX_FILES = {  # name -> md5 of the official gzipped file, per dataset
    "mnist": {
        "train-images-idx3-ubyte": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
        "train-labels-idx1-ubyte": "d53e105ee54ea40749a09fcbcd1e9432",
        "t10k-images-idx3-ubyte": "9fb629c4189551a2d022fa330f9573f3",
        "t10k-labels-idx1-ubyte": "ec29112dd5afa0611ce80d1b7f02629c",
    },
    "fashion-mnist": {
        "train-images-idx3-ubyte": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
        "train-labels-idx1-ubyte": "25c81989df183df01b3e8a0aad5dffbe",
        "t10k-images-idx3-ubyte": "bef4ecab320f06d8554ea6380940ec79",
        "t10k-labels-idx1-ubyte": "bb300cfdad3c16e7a12a480ee83fd310",
    },
}

# An IDX file of reslab's datasets is at most some 50 MB (MNIST's training images, unpacked).
MAX_BYTES = 2**30


def read_idx(path: Path) -> np.ndarray:
    """An IDX file (gzipped or not) as a uint8 numpy array of its declared shape."""
    try:
        raw = files.read_regular(path, MAX_BYTES, "dataset file", follow=True)
        raw = gzip.decompress(raw) if path.suffix == ".gz" else raw
    except (OSError, EOFError, gzip.BadGzipFile) as e:
        raise UserError(f"{path} cannot be read ({e}); the file is damaged, replace it.") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise UserError(f"{path} is not an IDX file of unsigned bytes (bad magic number); replace it.")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise UserError(f"{path} is truncated inside its header; replace it.")
    shape = struct.unpack(f">{ndim}I", raw[4:header])
    expected = int(np.prod(shape))
    if len(raw) - header != expected:
        raise UserError(
            f"{path} is truncated or padded: its header declares {expected} bytes of data, "
            f"it holds {len(raw) - header}; replace it."
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)


def find_idx_file(folder: Path, stem: str) -> Path | None:
    for name in (stem, stem + ".gz", stem.replace("-idx", ".idx")):
        if (folder / name).exists():
            return folder / name
    return None


def load_idx(name: str, data_dir: Path, download_ok: bool = True) -> Dataset:
    spec = IDX[name]
    folder = locate_idx(name, data_dir)
    if folder is None:
        folder = data_dir / name
        if not download_ok:
            raise UserError(
                f"{name} is not in {data_dir / name}. Put its four IDX files there "
                f"(from {spec['url']}), or run without --no-download to fetch them."
            )
        for stem, md5 in IDX_FILES[name].items():
            logging.getLogger(__name__).info(f"downloading {spec['url']}{stem}.gz ...")
            download(f"{spec['url']}{stem}.gz", folder / f"{stem}.gz", md5)
    arrays = {}
    for stem in IDX_FILES[name]:
        path = find_idx_file(folder, stem)
        if path is None:
            raise UserError(f"{folder} lacks {stem}(.gz): the {name} folder is incomplete.")
        arrays[stem] = read_idx(path)
    train_x, test_x = arrays["train-images-idx3-ubyte"], arrays["t10k-images-idx3-ubyte"]
    for what, x in (("train", train_x), ("test", test_x)):
        if x.ndim != 3:
            raise UserError(f"{name} {what} images in {folder} have shape {x.shape}, expected [N, H, W].")
    return make_dataset(
        name,
        train_x[:, None],
        arrays["train-labels-idx1-ubyte"],
        test_x[:, None],
        arrays["t10k-labels-idx1-ubyte"],
        spec["classes"],
        augment=False,
        info={"source": str(folder)},
    )


def locate_idx(name: str, data_dir: Path) -> Path | None:
    """The folder holding an IDX dataset: data_dir/NAME, data_dir, or the system's copy."""
    system = IDX[name]["system"]
    candidates = [data_dir / name, data_dir] + ([system] if system else [])
    return next((c for c in candidates if find_idx_file(c, "t10k-labels-idx1-ubyte")), None)


def idx_where(name: str, data_dir: Path) -> str:
    found = locate_idx(name, data_dir)
    return f"available in {found}" if found else f"not downloaded (first use fetches it into {data_dir / name})"
