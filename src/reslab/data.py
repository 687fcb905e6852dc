"""Dataset sources. Each returns uint8 images [N, C, H, W] and int64 labels, held in memory.

Sources (the `--dataset` names): cifar10, cifar100 (python-pickle folders, downloaded and
checksum-verified on first use), imagefolder:PATH (decoded once, cached beside the folder),
mnist and fashion-mnist (IDX files, gzipped or not), digits (the UCI 8x8 digits that ship
with reslab, no download) and synthetic (generated, for tests).
"""

from __future__ import annotations

import dataclasses
import functools
import gzip
import hashlib
import os
import pickle
import struct
import tarfile
import tempfile
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from reslab.errors import UserError
from reslab.runs import WriteError, atomic_write_bytes

DEFAULT_DATA_DIR = Path(os.environ.get("RESLAB_DATA", Path.home() / ".cache" / "reslab" / "data"))

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
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp"}


@dataclass
class Dataset:
    """A dataset in memory: uint8 images [N, C, H, W] and int64 labels per split."""

    name: str
    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    classes: list[str]
    val_x: torch.Tensor | None = None
    val_y: torch.Tensor | None = None
    # The paper's crop-and-flip suits natural images; digits must not be mirrored.
    augment: bool = True
    info: dict = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        c, h, w = self.train_x.shape[1:]
        return c, h, w

    def to(self, device) -> Dataset:
        """The same dataset with every split on `device` (copied once, not per use)."""
        move = lambda t: None if t is None else t.to(device)  # noqa: E731
        splits = ("train_x", "train_y", "test_x", "test_y", "val_x", "val_y")
        moved: dict[str, Any] = {k: move(getattr(self, k)) for k in splits}
        return dataclasses.replace(self, **moved)

    def normalization(self) -> tuple[list[float], list[float]]:
        """Per-channel mean and std of the training split, in [0, 1] units."""
        x = self.train_x.double().div_(255)
        mean = x.mean(dim=(0, 2, 3))
        std = x.std(dim=(0, 2, 3)).clamp_min(1e-6)
        return mean.tolist(), std.tolist()


def check_arrays(images: np.ndarray, labels: np.ndarray, num_classes: int, where: str) -> None:
    if images.ndim != 4 or images.dtype != np.uint8:
        raise UserError(f"{where}: expected uint8 images of shape [N, C, H, W], got {images.dtype} {images.shape}.")
    if len(images) != len(labels):
        raise UserError(f"{where}: {len(images)} images but {len(labels)} labels; the file is damaged.")
    if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
        raise UserError(
            f"{where}: labels must lie in 0..{num_classes - 1}, found {labels.min()}..{labels.max()}; "
            "the file is damaged or belongs to another dataset."
        )


def make_dataset(name, train_x, train_y, test_x, test_y, classes, augment=True, info=None) -> Dataset:
    for split, x, y in (("train", train_x, train_y), ("test", test_x, test_y)):
        check_arrays(x, y, len(classes), f"{name} ({split} split)")
    return Dataset(
        name=name,
        train_x=torch.from_numpy(np.require(train_x, requirements=["C", "W"])),
        train_y=torch.from_numpy(np.asarray(train_y, dtype=np.int64)),
        test_x=torch.from_numpy(np.require(test_x, requirements=["C", "W"])),
        test_y=torch.from_numpy(np.asarray(test_y, dtype=np.int64)),
        classes=list(classes),
        augment=augment,
        info=info or {},
    )


# ---------------------------------------------------------------------------------------------
# downloads


def hashed(path: Path, h):
    """`h` updated with the file's content, read in 1 MiB chunks (a file of any size, bounded memory)."""
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h


def md5_of(path: Path, algorithm: str = "md5") -> str:
    """The file's hash (md5 unless `algorithm` says otherwise), as hex."""
    return hashed(path, hashlib.new(algorithm)).hexdigest()


def download(url: str, dest: Path, md5: str, algorithm: str = "md5", packed: bool = True) -> Path:
    """Fetch `url` to `dest` through a temporary file; keep it only if its hash (md5, or
    `algorithm`) matches. `packed`: an archive, which may also be put there unpacked."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as out:
            try:
                with urllib.request.urlopen(url, timeout=60) as resp:
                    while chunk := resp.read(1 << 20):
                        out.write(chunk)
            except OSError as e:
                raise UserError(
                    f"could not download {url} ({e}). If this machine is offline, download the file "
                    f"elsewhere and put it at {dest}"
                    + (" (or its unpacked contents beside it)" if packed else "")
                    + ", then run again."
                ) from None
        got = md5_of(Path(tmp), algorithm)
        if got != md5:
            raise UserError(
                f"the download of {url} is damaged: {algorithm} {got}, expected {md5}. Nothing was kept; try again."
            )
        os.replace(tmp, dest)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return dest


# ---------------------------------------------------------------------------------------------
# CIFAR-10 / CIFAR-100 (python pickle batches)


def read_pickle_batch(path: Path) -> dict:
    """One CIFAR pickle batch. Only plain dicts of lists/arrays are accepted (see find_class)."""
    if not path.exists():
        raise UserError(f"{path} is missing: the CIFAR folder is incomplete; delete it and download again.")
    try:
        with open(path, "rb") as f:
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


def locate_idx(name: str, data_dir: Path) -> Path | None:
    """The folder holding an IDX dataset: data_dir/NAME, data_dir, or the system's copy."""
    system = IDX[name]["system"]
    candidates = [data_dir / name, data_dir] + ([system] if system else [])
    return next((c for c in candidates if find_idx_file(c, "t10k-labels-idx1-ubyte")), None)


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
        print(f"downloading {spec['url']} to {archive} ...")
        download(spec["url"], archive, spec["md5"])
    elif md5_of(archive) != spec["md5"]:
        raise UserError(f"{archive} has the wrong checksum (expected md5 {spec['md5']}); delete it and run again.")
    with tempfile.TemporaryDirectory(dir=data_dir, prefix=".unpack-") as tmp:
        with tarfile.open(archive) as tar:
            safe_extract(tar, Path(tmp))
        os.replace(Path(tmp) / spec["folder"], data_dir / spec["folder"])
    return data_dir / spec["folder"]


def safe_extract(tar: tarfile.TarFile, dest: Path) -> None:
    """Unpack only regular files and folders inside `dest`: tarfile's "data" filter where Python
    has it (3.10.12, 3.11.4 and later), the same rule checked by hand on older ones."""
    if hasattr(tarfile, "data_filter"):
        try:
            tar.extractall(dest, filter="data")
        except tarfile.TarError as e:
            raise UserError(
                f"{tar.name!r} holds a member that is not a plain file in it ({e}); not unpacked."
            ) from None
        return
    root = dest.resolve()
    members = tar.getmembers()
    for m in members:
        target = (root / m.name).resolve()
        if not (m.isreg() or m.isdir()) or m.name.startswith("/") or not target.is_relative_to(root):
            raise UserError(f"{tar.name!r} holds {m.name!r}, which is not a plain file inside it; not unpacked.")
    tar.extractall(dest, members=members)


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


# ---------------------------------------------------------------------------------------------
# MNIST / Fashion-MNIST (IDX)


def read_idx(path: Path) -> np.ndarray:
    """An IDX file (gzipped or not) as a uint8 numpy array of its declared shape."""
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
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
            print(f"downloading {spec['url']}{stem}.gz ...")
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


# ---------------------------------------------------------------------------------------------
# image folders (PATH/train/<class>/*.png, PATH/test/<class>/*.jpg), decoded once and cached


# The largest image file an image folder may hold (a large photo is a few MB).
MAX_IMAGE_BYTES = 64 * 2**20


def scan_image_folder(root: Path) -> tuple[dict[str, list[tuple[Path, int]]], list[str]]:
    train_dir = root / "train"
    if not train_dir.is_dir() or not (root / "test").is_dir():
        raise UserError(f"{root} must hold train/<class>/ and test/<class>/ folders of images.")
    classes = sorted(p.name for p in train_dir.iterdir() if p.is_dir())
    if not classes:
        raise UserError(f"{train_dir} has no class folders.")
    files = {}
    for split in ("train", "test"):
        items = []
        for label, cls in enumerate(classes):
            folder = root / split / cls
            found = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES) if folder.is_dir() else []
            broken = [p for p in found if not p.is_file()]
            if broken:
                raise UserError(f"{broken[0]} is not a readable file (a broken or looping link?); fix or remove it.")
            huge = next((p for p in found if p.stat().st_size > MAX_IMAGE_BYTES), None)
            if huge is not None:  # refused by its size, before a byte of it is read
                raise UserError(
                    f"{huge} is {huge.stat().st_size:,} bytes, more than any image of a dataset for these networks "
                    f"({MAX_IMAGE_BYTES // 2**20} MiB at most); remove it from the folder."
                )
            if not found:
                raise UserError(f"{folder} holds no images (.png/.jpg): every class needs images in both splits.")
            items += [(p, label) for p in found]
        files[split] = items
    extra = sorted(p.name for p in (root / "test").iterdir() if p.is_dir() and p.name not in classes)
    if extra:
        raise UserError(f"{root / 'test'} has class folders that train/ lacks: {', '.join(extra)}.")
    return files, classes


def decode_images(items: list[tuple[Path, int]]) -> tuple[np.ndarray, np.ndarray]:
    import warnings

    from PIL import Image, UnidentifiedImageError

    images, shape = [], None
    for path, _ in items:
        try:
            with warnings.catch_warnings(), Image.open(path) as im:
                # A file that would decode to a huge image is refused before it is decoded.
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                im.load()
                a = to_uint8(im)
        except (OSError, UnidentifiedImageError, SyntaxError, ValueError) as e:
            raise UserError(f"{path} is not a readable image ({e}); fix or remove it.") from None
        except (Image.DecompressionBombError, Image.DecompressionBombWarning):
            raise UserError(
                f"{path} would decode to more than {Image.MAX_IMAGE_PIXELS:,} pixels, far more than an image of a "
                "dataset for these networks; reslab refuses it (a decompression bomb?)."
            ) from None
        a = a[None] if a.ndim == 2 else a.transpose(2, 0, 1)
        if shape is None:
            shape = a.shape
        elif a.shape != shape:
            raise UserError(
                f"{path} has shape {a.shape} (channels, height, width), the others {shape}: "
                "all images must have one size."
            )
        images.append(a)
    return np.stack(images), np.array([label for _, label in items], dtype=np.int64)


def to_uint8(im) -> np.ndarray:
    """An image's pixels as uint8, grey (H, W) or RGB (H, W, 3). 16- and 32-bit grey images are
    scaled (65535 -> 255), not clipped at 255."""
    if im.mode.startswith("I"):  # I;16, I;16B, I (PNG's 16-bit grey opens as one of these)
        a = np.asarray(im).astype(np.float64)
        top = 65535.0 if im.mode.startswith("I;16") or a.max(initial=0) > 255 else 255.0
        return np.clip(np.rint(a * (255.0 / top)), 0, 255).astype(np.uint8)
    if im.mode == "F":
        a = np.asarray(im)
        return np.clip(np.rint(a * 255.0 if a.max(initial=0) <= 1 else a), 0, 255).astype(np.uint8)
    return np.asarray(im.convert("L" if im.mode in ("L", "1") else "RGB"), np.uint8)


def image_folder_cache_path(root: Path) -> Path:
    """Beside the folder when writable, else in the user cache (keyed by the folder's path)."""
    beside = root.parent / f".{root.name}.reslab-cache.npz"
    if os.access(root.parent, os.W_OK):
        return beside
    key = hashlib.sha256(str(root.resolve()).encode()).hexdigest()[:16]
    return DEFAULT_DATA_DIR / "imagefolder-cache" / f"{root.name}-{key}.npz"


def folder_fingerprint(root: Path, files: dict) -> str:
    """What the cache is keyed by: every file's path, label, size, modification time and content,
    so that an image edited in place (same name, same size) is decoded again, never served stale."""
    h = hashlib.blake2b(digest_size=32)
    for split in files:
        for p, label in files[split]:
            st = p.stat()
            h.update(f"{split} {p.relative_to(root)} {label} {st.st_size} {st.st_mtime_ns}\n".encode())
            h.update(file_digest(p))
    return h.hexdigest()


def file_digest(path: Path) -> bytes:
    """An image's content hash, for the cache's fingerprint."""
    try:
        return hashed(path, hashlib.blake2b(digest_size=16)).digest()
    except OSError as e:
        raise UserError(f"{path} cannot be read ({e.strerror or e}); fix its permissions or remove it.") from None


def load_image_folder(root: Path) -> Dataset:
    if not root.is_dir():
        raise UserError(f"image folder {root} does not exist.")
    files, classes = scan_image_folder(root)
    fingerprint = folder_fingerprint(root, files)
    cache = image_folder_cache_path(root)
    arrays = None
    if cache.exists():
        try:
            with np.load(cache, allow_pickle=False) as z:
                if str(z["fingerprint"]) == fingerprint:
                    arrays = {k: z[k] for k in ("train_x", "train_y", "test_x", "test_y")}
        except Exception:
            arrays = None  # a damaged or stale cache is rebuilt, never trusted
    if arrays is None:
        print(f"decoding {sum(len(v) for v in files.values())} images in {root} (cached afterwards) ...")
        (train_x, train_y), (test_x, test_y) = decode_images(files["train"]), decode_images(files["test"])
        if train_x.shape[1:] != test_x.shape[1:]:
            raise UserError(f"{root}: train images are {train_x.shape[1:]}, test images {test_x.shape[1:]}.")
        arrays = dict(train_x=train_x, train_y=train_y, test_x=test_x, test_y=test_y)
        save_npz_atomic(cache, fingerprint=np.array(fingerprint), **arrays)
    return make_dataset(
        f"imagefolder:{root}",
        arrays["train_x"],
        arrays["train_y"],
        arrays["test_x"],
        arrays["test_y"],
        classes,
        info={"source": str(root)},
    )


def save_npz_atomic(path: Path, **arrays) -> None:
    import io

    buf = io.BytesIO()
    np.savez(buf, **arrays)
    try:
        atomic_write_bytes(path, buf.getvalue())
    except WriteError:
        print(f"note: could not write the cache {path}; the images will be decoded again next time.")


# ---------------------------------------------------------------------------------------------
# embedded and generated data


DIGITS_FILE = Path(__file__).resolve().parent / "datasets" / "digits.csv.gz"  # origin, licence: README.md there


@functools.cache  # the analyses load it once per network
def digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """The 1,797 UCI handwritten digits that ship with reslab, as (images 0..16, labels), read-only."""
    table = np.loadtxt(DIGITS_FILE, delimiter=",")
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


def make_synthetic(
    n_train: int = 1000, n_test: int = 500, shape=(3, 32, 32), num_classes: int = 10, seed: int = 0
) -> Dataset:
    """Learnable generated images: a smooth random template per class plus noise."""
    g = np.random.default_rng(seed)
    c, h, w = shape
    coarse = g.normal(size=(num_classes, c, max(2, h // 4), max(2, w // 4)))
    templates = np.kron(coarse, np.ones((1, 1, -(-h // coarse.shape[2]), -(-w // coarse.shape[3]))))[:, :, :h, :w]

    def draw(n):
        y = np.arange(n) % num_classes
        g.shuffle(y)
        x = templates[y] + 0.8 * g.normal(size=(n, c, h, w))
        return np.clip(128 + 40 * x, 0, 255).astype(np.uint8), y

    (tx, ty), (vx, vy) = draw(n_train), draw(n_test)
    return make_dataset(
        "synthetic",
        tx,
        ty,
        vx,
        vy,
        [f"class{i}" for i in range(num_classes)],
        augment=False,
        info={"source": f"generated (seed {seed})"},
    )


# ---------------------------------------------------------------------------------------------
# selection, splits


def load_dataset(name: str, data_dir: str | Path | None = None, download_ok: bool = True) -> Dataset:
    data_dir = Path(data_dir) if data_dir else DEFAULT_DATA_DIR
    source = SOURCES.get(name.split(":", 1)[0] + ":" if name.startswith("imagefolder:") else name)
    if source is None:
        raise UserError(f"unknown dataset '{name}': choose one of {', '.join(DATASETS)}.")
    return source.load(name, data_dir, download_ok)


def resize(ds: Dataset, size: int | None) -> Dataset:
    """Every split's images at size x size: area averaging when shrinking (each new pixel the mean
    of the old pixels it covers, as in the downsampled ImageNet and CIFAR variants of Chrabaszcz
    et al. 2017), bilinear when enlarging. None, or the size the images have, changes nothing."""
    if size is None or ds.image_shape[1:] == (size, size):
        return ds

    def one(x: torch.Tensor) -> torch.Tensor:
        mode = "area" if size <= min(x.shape[2:]) else "bilinear"
        chunks = [
            F.interpolate(c.float(), size=(size, size), mode=mode).round_().clamp_(0, 255).to(torch.uint8)
            for c in x.split(4096)
        ]
        return torch.cat(chunks) if chunks else x[:, :, :size, :size]

    return dataclasses.replace(
        ds,
        train_x=one(ds.train_x),
        test_x=one(ds.test_x),
        val_x=None if ds.val_x is None else one(ds.val_x),
        info={**ds.info, "resized_from": list(ds.image_shape[1:])},
    )


def balanced_indices(labels: torch.Tensor, n: int, generator: torch.Generator) -> torch.Tensor:
    """n indices with the classes as equally represented as the data allows, in random order."""
    classes = labels.unique()
    per_class = [torch.nonzero(labels == c).flatten() for c in classes]
    per_class = [idx[torch.randperm(len(idx), generator=generator)] for idx in per_class]
    chosen: list[torch.Tensor] = []
    k = 0
    # Round-robin over classes so that any n is as balanced as possible.
    while len(chosen) < n:
        for idx in per_class:
            if k < len(idx) and len(chosen) < n:
                chosen.append(idx[k])
        k += 1
    out = torch.stack(chosen)
    return out[torch.randperm(len(out), generator=generator)]


def prepare(
    ds: Dataset, subset: int | None = None, val_split: int = 0, seed: int = 0, test_subset: int | None = None
) -> Dataset:
    """Hold out `val_split` training images for validation (class-balanced), then subsample the
    training images to `subset`, and the test images to `test_subset` (None: in the proportion of
    the training subset, so a small run does not spend its time scoring the whole test set; 0: all)."""
    check_sizes(ds, subset, val_split, test_subset)
    n = len(ds.train_y)
    g = torch.Generator().manual_seed(seed)
    if val_split:
        val = balanced_indices(ds.train_y, val_split, g)
        keep = torch.ones(n, dtype=torch.bool)
        keep[val] = False
        ds.val_x, ds.val_y = ds.train_x[val], ds.train_y[val]
        ds.train_x, ds.train_y = ds.train_x[keep], ds.train_y[keep]
    if subset:
        n = len(ds.train_y)
        idx = balanced_indices(ds.train_y, subset, g).sort().values
        ds.train_x, ds.train_y = ds.train_x[idx], ds.train_y[idx]
    n_test = len(ds.test_y)
    if test_subset is None:
        test_subset = max(ds.num_classes, round(n_test * subset / n)) if subset else 0
    if 0 < test_subset < n_test:
        # Its own generator: the training images drawn are the same whatever the test subset.
        idx = balanced_indices(ds.test_y, test_subset, torch.Generator().manual_seed(seed + 3)).sort().values
        ds.test_x, ds.test_y = ds.test_x[idx], ds.test_y[idx]
    return ds


def check_sizes(ds: Dataset, subset: int | None, val_split: int, test_subset: int | None) -> None:
    """The split sizes asked for fit the dataset: checked before a grid trains any cell."""
    n, n_test = len(ds.train_y), len(ds.test_y)
    if val_split and not 0 < val_split < n:
        raise UserError(f"--val-split {val_split} must be between 1 and {n - 1} for {ds.name}.")
    if subset and not 0 < subset <= n - val_split:
        raise UserError(f"--subset {subset} must be between 1 and {n - val_split} for {ds.name}.")
    if test_subset is not None and test_subset > n_test:
        raise UserError(f"--test-subset {test_subset} must be at most {n_test}, the test images of {ds.name}.")


def describe_datasets(data_dir: str | Path | None = None) -> list[tuple[str, str]]:
    """(name, where it is or how it would be obtained) for every source."""
    data_dir = Path(data_dir) if data_dir else DEFAULT_DATA_DIR
    return [(name.replace(":", ":PATH"), source.where(name, data_dir)) for name, source in SOURCES.items()]


def cifar_where(name: str, data_dir: Path) -> str:
    found = locate_cifar(name, data_dir)
    if found:
        return f"available in {found}"
    return f"not downloaded (first use fetches {CIFAR[name]['url']} into {data_dir})"


def idx_where(name: str, data_dir: Path) -> str:
    found = locate_idx(name, data_dir)
    return f"available in {found}" if found else f"not downloaded (first use fetches it into {data_dir / name})"


def digits_where(name: str, data_dir: Path) -> str:
    return "available (ships with reslab: 1,797 8x8 UCI digits, no download)"


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
