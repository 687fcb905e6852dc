"""The run directory, the contract between training and everything downstream.

    config.json        the resolved configuration (plus library versions and device)
    metrics.csv        one row per evaluation
    status.json        running / finished / failed / diverged / interrupted, with a message
    checkpoint.pt      everything needed to resume exactly (tensors and plain containers only)
    model.safetensors  the final weights

Every file is written atomically (temporary file in the same folder, then os.replace), so a
kill at any moment leaves either the old file or the new one, never half of one.
"""

from __future__ import annotations

import csv
import fcntl
import io
import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path

from reslab.errors import UserError

METRIC_FIELDS = [
    "epoch",
    "iteration",
    "lr",
    "train_loss",
    "train_error",
    "val_loss",
    "val_error",
    "test_loss",
    "test_error",
    "seconds",
    "images_per_second",
]
# Columns that depend on wall-clock time, not on the computation; ignored when runs are compared.
TIMING_FIELDS = ("seconds", "images_per_second")


# reslab's own temporary files: the only names it ever deletes on its own.
TMP_PREFIX = ".reslab-tmp-"
# Files reslab puts in a directory before it holds a run or an experiment (a lock, temporaries).
OWN_NAMES = (".lock",)

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


def read_json(path: Path) -> dict:
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise UserError(f"{path} does not exist.") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"{path} is not valid JSON ({e}); the file is damaged.") from None


def metrics_text(rows: list[dict]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=METRIC_FIELDS, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: ("" if r.get(k) is None else r[k]) for k in METRIC_FIELDS})
    return buf.getvalue()


def write_metrics(run_dir: Path, rows: list[dict]) -> None:
    atomic_write_text(Path(run_dir) / "metrics.csv", metrics_text(rows))


def read_metrics(run_dir: Path) -> list[dict]:
    """metrics.csv as a list of dicts of floats (None where a column is empty); a damaged file is
    one sentence, not a traceback."""
    path = Path(run_dir) / "metrics.csv"
    if not path.exists():
        return []
    rows = []
    try:
        with open(path, newline="") as f:
            reader = csv.DictReader(f)
            if reader.fieldnames is not None and list(reader.fieldnames) != METRIC_FIELDS:
                raise ValueError(f"its columns are {', '.join(reader.fieldnames)[:80]}")
            for r in reader:
                if None in r or None in r.values():
                    raise ValueError(f"row {reader.line_num} has {'too many' if None in r else 'too few'} values")
                row = {k: (float(v) if v != "" else None) for k, v in r.items()}
                if row["iteration"] is None or row["train_error"] is None or row["test_error"] is None:
                    raise ValueError(f"row {reader.line_num} has no iteration or errors")
                rows.append(row)
    except (ValueError, UnicodeDecodeError, csv.Error) as e:
        raise UserError(
            f"{path} is damaged ({str(e).splitlines()[0][:120]}); it is not the metrics file reslab wrote. "
            "Restore it or delete the run."
        ) from None
    return rows


RUN_STATES = ("new", "running", "finished", "failed", "diverged", "interrupted")


def write_status(run_dir: Path, state: str, message: str = "", **extra) -> None:
    write_json(Path(run_dir) / "status.json", {"state": state, "message": message, **extra})


def read_status(run_dir: Path) -> dict:
    path = Path(run_dir) / "status.json"
    if not path.exists():
        return {"state": "new", "message": ""}
    status = read_json(path)
    if (
        not isinstance(status, dict)
        or status.get("state") not in RUN_STATES
        or not isinstance(status.get("message", ""), str)
    ):
        raise UserError(f"{path} is damaged (no valid state); restore it or delete the run.")
    return status


def is_run_dir(path: Path) -> bool:
    return (Path(path) / "config.json").exists()


def read_config(run_dir: Path) -> dict:
    """A run's config.json, checked to be reslab's (its sections are there, as dicts)."""
    path = Path(run_dir) / "config.json"
    config = read_json(path)
    sections = ("train", "model", "resolved", "data")
    if not isinstance(config, dict) or not all(isinstance(config.get(k), dict) for k in sections):
        raise UserError(f"{path} is not a reslab run configuration (it needs the sections {', '.join(sections)}).")
    # The fields every reader uses, of the type it uses them as (the file may come from anyone).
    wanted = {
        ("model", "arch"): str,
        ("model", "depth"): int,
        ("resolved", "parameters"): int,
        ("resolved", "macs"): int,
        ("data", "name"): str,
        ("train", "seed"): int,
    }
    bad = [
        f"{section}.{key}"
        for (section, key), kind in wanted.items()
        if not isinstance(config[section].get(key), kind) or isinstance(config[section].get(key), bool)
    ]
    if bad:
        raise UserError(f"{path} is damaged: {', '.join(bad)} missing or of the wrong type.")
    return config


def owner(path: Path) -> str | None:
    """'experiment' or 'run' when `path` is a directory reslab made, 'empty' when it holds
    nothing (or only reslab's lock and temporaries), 'runs' when it holds only reslab runs, None
    when it holds anything else."""
    path = Path(path)
    if (path / "experiment.json").is_file():
        return "experiment"
    if (path / "config.json").is_file():
        try:
            read_config(path)
            return "run"
        except UserError:
            return None
    entries = list(path.iterdir())
    if all(p.name in OWN_NAMES or p.name.startswith(TMP_PREFIX) for p in entries):
        return "empty"
    # A folder of reslab runs and nothing else, as `reslab train` makes them: an experiment may take it.
    own = lambda p: p.name in OWN_NAMES or p.name.startswith(TMP_PREFIX) or p.is_dir() and owner(p) == "run"  # noqa: E731
    return "runs" if all(own(p) for p in entries) else None


def claim_dir(path: Path, kind: str) -> None:
    """Refuse to write a `kind` ('run' or 'experiment') into `path` unless it is new, empty, or
    reslab's own directory of that kind: a user's files are never overwritten or deleted."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise UserError(f"{path} is a file, not a directory; choose another --out.")
    if not path.exists():
        return
    try:
        found = owner(path)
    except PermissionError:
        raise UserError(f"{path} cannot be read (permission denied); choose another --out.") from None
    if found in ("empty", kind) or (found, kind) == ("runs", "experiment"):
        return
    if found is None:
        raise UserError(
            f"{path} is not empty and is not a reslab {kind} directory (it has no "
            f"{'config.json' if kind == 'run' else 'experiment.json'} of reslab's); reslab does not write into "
            "a directory of other files. Choose a new or empty --out."
        )
    raise UserError(
        f"{path} is a reslab {found} directory, not a {kind} directory; choose another --out"
        + (" (a run of its own goes into a new directory, outside the experiment)." if found == "experiment" else ".")
    )


class Locked(UserError):
    """Another process holds a run's lock."""


def find_runs(root: Path) -> list[Path]:
    """Run directories at or directly below `root`, sorted by name."""
    root = Path(root)
    if is_run_dir(root):
        return [root]
    return sorted(p for p in root.iterdir() if p.is_dir() and is_run_dir(p)) if root.is_dir() else []


@contextmanager
def run_lock(run_dir: Path):
    """Only one process trains a run directory at a time; a second one is refused. The holder
    removes temporary files that a killed writer left behind (no one else can be writing)."""
    run_dir = Path(run_dir)
    claim_dir(run_dir, "run")
    with locked(run_dir, f"another process is writing {run_dir} right now; wait for it to stop."):
        for stale in run_dir.glob(f"{TMP_PREFIX}*.tmp"):
            stale.unlink(missing_ok=True)
        yield


@contextmanager
def locked(directory: Path, busy: str):
    """An exclusive lock on `directory` (made if missing) for as long as the block runs; `busy`
    is the message when another process holds it."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
        f = open(directory / ".lock", "w")
    except OSError as e:
        raise UserError(f"cannot write into {directory} ({e.strerror or e}); choose another --out.") from None
    with f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise Locked(busy) from None
        yield


# Training settings that say where or how fast a run trains, not what it learns.
NOT_RECIPE = ("device", "data_dir", "download", "tensorboard", "sync_bn", "compile")


def differences(old: dict, new: dict, ignore=NOT_RECIPE, labels=("there", "asked")) -> list[str]:
    """The training settings in which two config.json 'train' sections differ, as 'name old
    there, new asked' phrases (empty when they describe the same training)."""
    keys = sorted((set(old) | set(new)) - set(ignore))
    a, b = labels
    show = lambda v: f"{v:g}" if isinstance(v, float) else repr(v)  # noqa: E731  (30 and 2.0 read as 30 and 2)
    return [f"{k} {show(old.get(k))} {a}, {show(new.get(k))} {b}" for k in keys if old.get(k) != new.get(k)]
