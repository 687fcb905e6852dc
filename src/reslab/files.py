"""Reading and writing inside folders that other people and programs can also touch: atomic
writes, JSON, the guarded reader and the locks.

reslab never follows a symbolic link it did not make (a lock, a figure or a run folder that is
a link may point at a user's private file), never blocks on a FIFO, and reads a file only after
checking, by its size, that reading it is reasonable.
"""

from __future__ import annotations

import errno
import hashlib
import json
import math
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
        raise WriteError(
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


def open_regular(path: Path, limit: int, what: str = "file", follow: bool = False):
    """A binary file object of `path` when it is a regular file of at most `limit` bytes; else a
    UserError that says what it is. `follow`: a symbolic link is followed (a file the user named,
    such as a checkpoint to import); without it a link is refused (a file inside a folder reslab
    made). A FIFO, a device or a folder is never opened, so no read can block or run forever."""
    path = Path(path)
    try:
        st = os.stat(path) if follow else os.lstat(path)
    except FileNotFoundError:
        raise UserError(f"{path} does not exist.") from None
    except OSError as e:
        raise UserError(f"{path} cannot be read ({e.strerror or e}).") from None
    if not stat.S_ISREG(st.st_mode):
        raise UserError(f"{path} is {kind_of(st.st_mode)}, not a {what}; it is not read.")
    if st.st_size > limit:
        raise UserError(
            f"{path} is {st.st_size:,} bytes, more than any {what} reslab reads ({limit:,}); it is not read."
        )
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | (0 if follow else getattr(os, "O_NOFOLLOW", 0))
    try:
        fd = os.open(path, flags)  # no wait on a FIFO (nor a link) swapped in since the stat
    except OSError as e:
        raise UserError(f"{path} cannot be read ({e.strerror or e}).") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise UserError(f"{path} is not a regular file; it is not read.")
    return os.fdopen(fd, "rb")


def read_regular(path: Path, limit: int, what: str = "file", follow: bool = False) -> bytes:
    """The bytes of `path`, through open_regular's checks."""
    with open_regular(path, limit, what, follow) as f:
        data = f.read(limit + 1)
    if len(data) > limit:
        raise UserError(f"{path} grew beyond {limit:,} bytes while it was read; it is not read.")
    return data


def kind_of(mode: int) -> str:
    kinds = {stat.S_ISLNK: "a symbolic link", stat.S_ISDIR: "a folder", stat.S_ISFIFO: "a FIFO"}
    return next((k for test, k in kinds.items() if test(mode)), "not a regular file")


def hashed(path: Path, h, follow: bool = False):
    """`h` updated with a regular file's content, read in 1 MiB blocks (any size, bounded memory)."""
    with open_regular(path, 2**40, "file", follow) as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h


def digest(path: Path, follow: bool = False, algorithm: str = "sha256") -> str:
    """The hash of a regular file, as hex."""
    return hashed(path, hashlib.new(algorithm), follow).hexdigest()


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
    """Write `path` whole or not at all, and only where reslab may: a file that is already there
    is replaced only when reslab's record says it wrote it (or under --overwrite)."""
    path = Path(path)
    check_replaceable(path)
    mine = f"{hashlib.sha256(data).hexdigest()} {len(data)}"
    # Recorded before the replace as well as after it, so a kill in between leaves a record that
    # names both the old and the new content: either one is still reslab's.
    before = recorded(path) if os.path.lexists(path) else set()
    write_record(path, before | {mine})
    replace_bytes(path, data, sync=True)
    write_record(path, {mine})


def replace_bytes(path: Path, data: bytes, sync: bool) -> None:
    """A temporary file in the same folder, renamed over `path`: a kill leaves one or the other."""
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f"{TMP_PREFIX}{path.name}.", suffix=".tmp")
        os.chmod(tmp, 0o666 & ~UMASK)  # mkstemp makes 0600 files; give the usual permissions
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            if sync:
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


# What reslab wrote into a folder: FOLDER/.reslab/NAME holds the sha256 and size of the content it
# last wrote to FOLDER/NAME. A file without a matching record is the user's, and is never replaced.
RECORDS = ".reslab"
_overwrite = False


class NotOurs(UserError):
    """A file that reslab would replace but cannot show it wrote."""


@contextmanager
def overwriting(allowed: bool = True):
    """Within the block, files reslab did not write may be replaced (the commands' --overwrite)."""
    global _overwrite
    before, _overwrite = _overwrite, allowed
    try:
        yield
    finally:
        _overwrite = before


def record_of(path: Path) -> Path:
    return path.parent / RECORDS / path.name


def recorded(path: Path) -> set[str]:
    """The 'sha256 size' entries of reslab's record of `path` (empty when it has none)."""
    record = record_of(Path(path))
    if not os.path.lexists(record):
        return set()
    try:
        return set(read_regular(record, 4096, "record of reslab's").decode().split("\n")) - {""}
    except (UserError, UnicodeDecodeError):
        return set()  # a damaged record proves nothing


def write_record(path: Path, entries: set[str]) -> None:
    folder = own_folder(path.parent / RECORDS)
    replace_bytes(folder / path.name, "".join(f"{e}\n" for e in sorted(entries)).encode(), sync=False)


def is_ours(path: Path) -> bool:
    """Whether `path` is a regular file whose content reslab's record says it wrote."""
    entries = recorded(path)
    try:
        st = os.lstat(path)
    except OSError:
        return False
    if not entries or not stat.S_ISREG(st.st_mode):
        return False
    sizes = {e.partition(" ")[2] for e in entries}
    return str(st.st_size) in sizes and f"{digest(path)} {st.st_size}" in entries


def check_replaceable(path: Path) -> None:
    """Refuse, naming it, a file at `path` that reslab would replace without having written it."""
    path = Path(path)
    try:
        st = os.lstat(path)  # a path the file system cannot hold (too long, through a file) is said now
    except FileNotFoundError:
        return
    if _overwrite or is_ours(path):
        return
    what = "a file" if stat.S_ISREG(st.st_mode) else kind_of(st.st_mode)
    raise NotOurs(
        f"{path} is {what} that reslab did not write (or that was changed since), so it is not replaced. "
        "Move it away, or add --overwrite to replace it."
    )


def check_outputs(folder: Path, names: list[str]) -> None:
    """check_replaceable for every file a command will write under `folder`, before it starts."""
    for name in names:
        for part in reversed(Path(name).parents[:-1]):  # figures/ as a link: said as such
            if os.path.lexists(Path(folder) / part):
                own_folder(Path(folder) / part)
        check_replaceable(Path(folder) / name)


def adopt(folder: Path, names: tuple[str, ...]) -> None:
    """Record the regular files `names` already in `folder` as reslab's (a run directory written
    before records existed, which the caller has shown to be reslab's)."""
    for path in (Path(folder) / name for name in names):
        if is_regular(path) and not recorded(path):
            write_record(path, {f"{digest(path)} {os.lstat(path).st_size}"})


def is_own_entry(path: Path, names: tuple[str, ...]) -> bool:
    """A lock (one of `names`), temporary file or records folder of reslab's own."""
    regular = (path.name in names or path.name.startswith(TMP_PREFIX)) and is_regular(path)
    return regular or path.name == RECORDS and is_real_dir(path)


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
        value = [[]] * (MAX_DEPTH + 2)  # so deep that json itself gave up
    except ValueError as e:
        raise UserError(f"{path} is damaged ({e}).") from None
    if why := sane(value):
        raise UserError(f"{path} is damaged: it {why}, which no file of reslab's does.")
    return value


# Bounds no JSON file of reslab's comes near: deeper nesting, longer texts or lists are damage.
MAX_DEPTH, MAX_ITEMS = 32, 1_000_000


def sane(value, depth: int = 0) -> str | None:
    """Why a JSON value cannot be one reslab wrote (too deep, too long, not finite), or None."""
    if depth > MAX_DEPTH:
        return "nested too deeply"
    if isinstance(value, float) and not math.isfinite(value):
        return f"holds {value}"
    if isinstance(value, str) and len(value) > schema.MAX_TEXT:
        return f"holds a text of {len(value):,} characters"
    if isinstance(value, (list, dict)):
        if len(value) > MAX_ITEMS:
            return f"holds {len(value):,} items"
        items = value.values() if isinstance(value, dict) else value
        return next((why for v in items if (why := sane(v, depth + 1))), None)
    return None


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
