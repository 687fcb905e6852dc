"""Downloads that keep a file only when its hash matches, and archives unpacked only when every
member is a plain file inside the destination."""

from __future__ import annotations

import os
import tarfile
import tempfile
import urllib.request
from pathlib import Path

from reslab import files
from reslab.errors import UserError


def md5_of(path: Path, algorithm: str = "md5") -> str:
    """The file's hash (md5 unless `algorithm` says otherwise), as hex; a FIFO or device is refused."""
    return files.digest(path, follow=True, algorithm=algorithm)


def download(url: str, dest: Path, md5: str, algorithm: str = "md5", packed: bool = True) -> Path:
    """Fetch `url` to `dest` through a temporary file; keep it only if its hash (md5, or
    `algorithm`) matches. `packed`: an archive, which may also be put there unpacked."""
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    except OSError as e:
        raise UserError(
            f"cannot write the download into {dest.parent} ({e.strerror or e}). Make that folder writable, or set "
            f"--data-dir (or RESLAB_DATA) to a folder you can write; or fetch {url} yourself and put it at {dest}."
        ) from None
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
