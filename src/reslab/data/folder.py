"""Image folders (PATH/train/<class>/*.png, PATH/test/<class>/*.jpg): every file checked before
it is read, decoded once, and cached beside the folder keyed by every file's content."""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import numpy as np

from reslab.data.dataset import DEFAULT_DATA_DIR, Dataset, make_dataset
from reslab.errors import UserError
from reslab.files import NotOurs, WriteError, atomic_write_bytes, hashed, open_regular, overwriting

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp"}


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
            with (
                warnings.catch_warnings(),
                open_regular(path, MAX_IMAGE_BYTES, "image", follow=True) as f,
                Image.open(f) as im,
            ):
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
    """The decoded images' cache: in the user cache directory ($RESLAB_DATA or ~/.cache/reslab/data),
    keyed by the folder's path, never among the user's own files."""
    key = hashlib.sha256(str(root.resolve()).encode()).hexdigest()[:16]
    return DEFAULT_DATA_DIR / "imagefolder-cache" / f"{root.name}-{key}.npz"


def old_cache_path(root: Path) -> Path:
    """Where reslab 0.1 kept the cache, beside the folder: still read, never written."""
    return root.parent / f".{root.name}.reslab-cache.npz"


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
        return hashed(path, hashlib.blake2b(digest_size=16), follow=True).digest()
    except OSError as e:
        raise UserError(f"{path} cannot be read ({e.strerror or e}); fix its permissions or remove it.") from None


def load_image_folder(root: Path) -> Dataset:
    if not root.is_dir():
        raise UserError(f"image folder {root} does not exist.")
    files, classes = scan_image_folder(root)
    fingerprint = folder_fingerprint(root, files)
    cache = image_folder_cache_path(root)
    arrays = read_cache(cache, fingerprint) or read_cache(old_cache_path(root), fingerprint)
    if arrays is None:
        logging.getLogger(__name__).info(
            f"decoding {sum(len(v) for v in files.values())} images in {root} (cached afterwards) ..."
        )
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


def read_cache(path: Path, fingerprint: str) -> dict | None:
    """The cached arrays when `path` holds those of this very folder; None otherwise."""
    if not path.is_file():
        return None
    try:
        with open_regular(path, 2**40, "cache") as f, np.load(f, allow_pickle=False) as z:
            if str(z["fingerprint"]) == fingerprint:
                return {k: z[k] for k in ("train_x", "train_y", "test_x", "test_y")}
    except Exception:
        pass  # a damaged or stale cache is rebuilt, never trusted
    return None


def save_npz_atomic(path: Path, **arrays) -> None:
    import io

    buf = io.BytesIO()
    np.savez(buf, **arrays)
    try:
        with overwriting():  # the cache folder is reslab's alone: a stale cache there is replaced
            atomic_write_bytes(path, buf.getvalue())
    except (WriteError, NotOurs):
        logging.getLogger(__name__).warning(
            f"note: could not write the cache {path}; the images will be decoded again next time."
        )
