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


UMASK = os.umask(0)
os.umask(UMASK)


class WriteError(UserError):
    """A file could not be written (disk full, no permission); the previous version is intact."""


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
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
    """metrics.csv as a list of dicts of floats (None where a column is empty)."""
    path = Path(run_dir) / "metrics.csv"
    if not path.exists():
        return []
    rows = []
    with open(path, newline="") as f:
        for r in csv.DictReader(f):
            rows.append({k: (float(v) if v not in ("", None) else None) for k, v in r.items()})
    return rows


def write_status(run_dir: Path, state: str, message: str = "", **extra) -> None:
    write_json(Path(run_dir) / "status.json", {"state": state, "message": message, **extra})


def read_status(run_dir: Path) -> dict:
    path = Path(run_dir) / "status.json"
    if not path.exists():
        return {"state": "new", "message": ""}
    return read_json(path)


def is_run_dir(path: Path) -> bool:
    return (Path(path) / "config.json").exists()


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
    run_dir.mkdir(parents=True, exist_ok=True)
    with open(run_dir / ".lock", "w") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UserError(f"another process is training {run_dir} right now; wait for it to stop.") from None
        for stale in run_dir.glob(".*.tmp"):
            stale.unlink(missing_ok=True)
        yield
