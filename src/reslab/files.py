"""Reading and writing inside folders that other people and programs can also touch: atomic
writes, JSON, the guarded reader and the locks.

reslab never follows a symbolic link it did not make (a lock, a figure or a run folder that is
a link may point at a user's private file), never blocks on a FIFO, and reads a file only after
checking, by its size, that reading it is reasonable.
"""

from __future__ import annotations

import errno
import json
import os
import stat
import tempfile
from contextlib import contextmanager
from pathlib import Path

from reslab import schema
from reslab.errors import UserError

# The most entries of a folder reslab inspects before deciding whether it may write into it.
MAX_ENTRIES = 10_000


def is_link(path: Path) -> bool:
    return os.path.islink(path)


def is_regular(path: Path) -> bool:
    """A regular file itself: not a link, a FIFO, a device or a folder."""
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except OSError:
        return False


def is_real_dir(path: Path) -> bool:
    """A folder itself, not a link to one."""
    try:
        return stat.S_ISDIR(os.lstat(path).st_mode)
    except OSError:
        return False


def own_folder(path: Path, levels: int = 1) -> Path:
    """`path`, made if missing, where its last `levels` components are folders of reslab's own:
    a link or a file in their place is refused, since writing through it would land elsewhere."""
    path = Path(path)
    for i in range(levels - 1, -1, -1):
        part = path.parents[i - 1] if i else path
        if is_link(part) or (part.exists() and not part.is_dir()):
            raise UserError(
                f"{part} is {'a symbolic link' if is_link(part) else 'not a folder'}; reslab writes only into "
                "folders of its own there. Remove it and run the command again."
            )
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(
            f"could not make the folder {path} ({e.strerror or e}); fix the permissions or free "
            "some disk space, then run the same command again."
        ) from None
    return path


def open_lock(path: Path) -> int:
    """A file descriptor of the lock file `path`, made if missing, never truncated, never a link's
    target (O_NOFOLLOW)."""
    try:
        if is_link(path):  # where O_NOFOLLOW is missing (Windows), at least a link made beforehand
            raise OSError(errno.ELOOP, "a symbolic link")
        return os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o666)
    except OSError as e:
        if e.errno == errno.ELOOP or is_link(path):
            raise UserError(
                f"{path} is a symbolic link; reslab never follows a link it did not make. Remove it and run the "
                "command again."
            ) from None
        raise UserError(f"cannot write into {path.parent} ({e.strerror or e}); choose another --out.") from None


class Busy(Exception):
    """Another process holds the lock."""


def lock_exclusive(fd: int) -> None:
    """Take an exclusive lock on an open lock file at once, or raise Busy. flock on POSIX (freed
    by the kernel when the process dies), msvcrt's byte lock on Windows. (filelock is not used: it
    opens its file with O_TRUNC, which truncates a link's target.)"""
    try:
        import fcntl
    except ImportError:  # Windows
        import msvcrt

        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)  # type: ignore[attr-defined]
        except OSError:
            raise Busy from None
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise Busy from None


def read_regular(path: Path, limit: int, what: str = "file") -> bytes:
    """The bytes of `path` when it is a regular file (not a link, FIFO or folder) of at most
    `limit` bytes; else a UserError that says which it is."""
    path = Path(path)
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        raise UserError(f"{path} does not exist.") from None
    except OSError as e:
        raise UserError(f"{path} cannot be read ({e.strerror or e}).") from None
    if not stat.S_ISREG(st.st_mode):
        kinds = {stat.S_ISLNK: "a symbolic link", stat.S_ISDIR: "a folder", stat.S_ISFIFO: "a FIFO"}
        kind = next((k for test, k in kinds.items() if test(st.st_mode)), "not a regular file")
        raise UserError(f"{path} is {kind}, not the {what} reslab wrote; it is not read.")
    if st.st_size > limit:
        raise UserError(f"{path} is {st.st_size:,} bytes, more than a {what} of reslab's ({limit:,}); it is not read.")
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
    try:
        fd = os.open(path, flags)  # no link, and no wait on a FIFO swapped in since the lstat
    except OSError as e:
        raise UserError(f"{path} cannot be read ({e.strerror or e}).") from None
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise UserError(f"{path} is not a regular file; it is not read.")
        data = f.read(limit + 1)
    if len(data) > limit:
        raise UserError(f"{path} grew beyond {limit:,} bytes while it was read; it is not read.")
    return data


def entries(path: Path, limit: int = MAX_ENTRIES) -> list[Path] | None:
    """The entries of folder `path`, or None when it holds more than `limit` (too many to inspect)."""
    found: list[Path] = []
    with os.scandir(path) as it:
        for entry in it:
            if len(found) == limit:
                return None
            found.append(Path(entry.path))
    return found


# reslab's own temporary files: the only names it ever deletes on its own.
TMP_PREFIX = ".reslab-tmp-"
UMASK = os.umask(0)
os.umask(UMASK)


class WriteError(UserError):
    """A file could not be written (disk full, no permission); the previous version is intact."""


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f"{TMP_PREFIX}{path.name}.", suffix=".tmp")
        os.chmod(tmp, 0o666 & ~UMASK)  # mkstemp makes 0600 files; give the usual permissions
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        raise WriteError(
            f"could not write {path} ({e.strerror or e}); "
            + ("the previous version of it is intact. " if path.exists() else "")
            + "Free some disk space or fix the permissions, then run the same command again (with --resume for "
            "a training run)."
        ) from None
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def write_json(path: Path, obj) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


# The largest JSON file reslab reads back: its own are a few KB (an analysis with curves, a few MB).
MAX_JSON_BYTES = 64 * 2**20


def read_json(path: Path):
    """A JSON file reslab wrote: a regular file (not a link, FIFO or folder) of a sensible size,
    holding only finite numbers, texts and lists of sensible sizes, not nested absurdly deep."""
    data = read_regular(Path(path), MAX_JSON_BYTES, "JSON file")
    try:
        value = json.loads(data, parse_constant=refuse_constant)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"{path} is not valid JSON ({e}); the file is damaged.") from None
    except RecursionError:
        value = [[]] * (schema.MAX_DEPTH + 2)  # so deep that json itself gave up
    except ValueError as e:
        raise UserError(f"{path} is damaged ({e}).") from None
    if why := schema.sane(value):
        raise UserError(f"{path} is damaged: it {why}, which no file of reslab's does.")
    return value


def refuse_constant(name: str):
    raise ValueError(f"it holds {name}, which reslab never writes")


class Locked(UserError):
    """Another process holds a run's lock."""


@contextmanager
def locked(directory: Path, busy: str):
    """An exclusive lock on `directory` (made if missing) for as long as the block runs; `busy`
    is the message when another process holds it."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"cannot write into {directory} ({e.strerror or e}); choose another --out.") from None
    fd = open_lock(directory / ".lock")
    try:
        try:
            lock_exclusive(fd)
        except Busy:
            raise Locked(busy) from None
        yield
    finally:
        os.close(fd)
