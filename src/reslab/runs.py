"""The run directory, the contract between training and everything downstream.

    config.json        the resolved configuration (plus library versions and device)
    metrics.csv        one row per evaluation
    status.json        running / finished / failed / diverged / interrupted, with a message
    checkpoint.pt      everything needed to resume exactly (tensors and plain containers only)
    model.safetensors  the final weights

config.json is a RunConfig in code, and a run read back is a RunRecord: every stage writes and
reads the directory through them (write_run, load_run, gather), never through raw dicts.
Every file is written atomically (temporary file in the same folder, then os.replace), so a
kill at any moment leaves either the old file or the new one, never half of one.
"""

from __future__ import annotations

import csv
import io
import os
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec
from msgspec import UNSET, UnsetType

from reslab import checkpoints, files, schema
from reslab.config import TrainConfig, differences, recipe
from reslab.errors import UserError
from reslab.models import ARCHS, ModelConfig, display
from reslab.schema import METRIC_FIELDS, Count, DataInfo, Resolved, Status, check_rows

# Columns that depend on wall-clock time, not on the computation; ignored when runs are compared.
TIMING_FIELDS = ("seconds", "images_per_second")
# metrics.csv holds one short row per evaluation: a million rows are some 100 MB.
MAX_METRICS_BYTES = 256 * 2**20


# Files reslab puts in a directory before it holds a run or an experiment (a lock, temporaries).
OWN_NAMES = (".lock",)
RUN_FILES = ("config.json", "metrics.csv", "status.json", "checkpoint.pt", "model.safetensors")


def metrics_text(rows: list[dict]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=METRIC_FIELDS, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: ("" if r.get(k) is None else r[k]) for k in METRIC_FIELDS})
    return buf.getvalue()


def write_metrics(run_dir: Path, rows: list[dict]) -> None:
    files.atomic_write_text(Path(run_dir) / "metrics.csv", metrics_text(rows))


def read_metrics(run_dir: Path) -> list[dict]:
    """metrics.csv as a list of dicts of floats (None where a column is empty); a damaged file is
    one sentence, not a traceback."""
    path = Path(run_dir) / "metrics.csv"
    if not os.path.lexists(path):
        return []
    rows: list[dict] = []
    try:
        text = files.read_regular(path, MAX_METRICS_BYTES, "metrics file").decode()
        reader = csv.DictReader(io.StringIO(text, newline=""))
        if reader.fieldnames is not None and list(reader.fieldnames) != METRIC_FIELDS:
            raise ValueError(f"its columns are {', '.join(reader.fieldnames)[:80]}")
        for r in reader:
            if None in r or None in r.values():
                raise ValueError(f"row {reader.line_num} has {'too many' if None in r else 'too few'} values")
            rows.append({k: (float(v) if v != "" else None) for k, v in r.items()})
        check_rows(rows)
    except (ValueError, UnicodeDecodeError, csv.Error) as e:
        raise UserError(
            f"{path} is damaged ({str(e).splitlines()[0][:120]}); it is not the metrics file reslab wrote. "
            "Restore it or delete the run."
        ) from None
    return rows


def write_status(run_dir: Path, state: str, message: str = "", **extra) -> None:
    status = Status(state=state, message=message, **extra)  # type: ignore[arg-type]
    files.write_json(Path(run_dir) / "status.json", msgspec.to_builtins(status))


def read_status(run_dir: Path) -> dict:
    path = Path(run_dir) / "status.json"
    if not path.exists():
        return {"state": "new", "message": ""}
    status = files.read_json(path)
    schema.read(status, Status, path)
    return status


def is_run_dir(path: Path) -> bool:
    return (Path(path) / "config.json").exists()


@dataclass
class RunConfig:
    """config.json: how a run was trained (train), the network (model), what the settings
    resolved to (Resolved), the data (DataInfo), the environment, and for runs reslab did not
    train, where they came from."""

    train: TrainConfig
    model: ModelConfig
    resolved: Resolved
    data: DataInfo
    environment: dict = field(default_factory=dict)
    imported: dict | None = None  # a checkpoint trained elsewhere (pretrained.py)
    constructed: dict | None = None  # a deeper net built from a shallower one (analysis/construct.py)

    def to_json(self) -> dict:
        """The content of config.json, checked as a reader will check it."""
        d = {
            "train": asdict(self.train),
            "model": self.model.to_dict(),
            "resolved": self.resolved.to_json(),
            "data": self.data.to_json(),
            "environment": self.environment,
        }
        d.update({k: getattr(self, k) for k in ("imported", "constructed") if getattr(self, k) is not None})
        RunConfig.from_json(d, Path("config.json"))
        return d

    @classmethod
    def from_json(cls, d, path: Path) -> RunConfig:
        """A config.json's content, checked field by field (the file may come from anyone)."""
        sections = ("train", "model", "resolved", "data")
        if not isinstance(d, dict) or not all(isinstance(d.get(k), dict) for k in sections):
            raise UserError(f"{path} is not a reslab run configuration (it needs the sections {', '.join(sections)}).")
        config = schema.read(d, cls, path)
        try:
            config.train.check_values()
        except UserError as e:
            raise UserError(f"{path} is damaged: its train section is not valid ({e}).") from None
        if config.model.arch not in ARCHS:  # a registry: architectures may be added
            raise UserError(f"{path} is damaged: model.arch '{config.model.arch}' is not a network reslab builds.")
        return config

    parameters = property(lambda self: self.resolved.parameters)
    macs = property(lambda self: self.resolved.macs)
    dataset = property(lambda self: self.data.name)

    def normalization(self, path: Path = Path("config.json")) -> tuple[list[float], list[float]]:
        """The per-channel mean and std the run's inputs were normalised with."""
        norm = self.resolved.normalization or {}  # each value a finite number: Resolved
        mean, std = norm.get("mean", []), norm.get("std", [])
        if not len(mean) == len(std) == self.model.in_channels or not all(v > 0 for v in std):
            raise UserError(
                f"{path} has no valid resolved.normalization (a mean and a positive std for each of the "
                f"network's {self.model.in_channels} input channels)."
            )
        return mean, std


def read_config(run_dir: Path) -> RunConfig:
    path = Path(run_dir) / "config.json"
    return RunConfig.from_json(files.read_json(path), path)


@dataclass
class RunRecord:
    """A run directory read back: its configuration, metrics rows and status."""

    dir: Path
    config: RunConfig
    metrics: list[dict]
    status: dict

    name = property(lambda self: self.dir.name)
    arch = property(lambda self: self.config.model.arch)
    depth = property(lambda self: self.config.model.depth)
    seed = property(lambda self: self.config.train.seed)
    label = property(lambda self: display(self.arch, self.depth))
    state = property(lambda self: self.status["state"])
    final = property(lambda self: self.metrics[-1] if self.metrics else None)


def load_run(run_dir: Path) -> RunRecord:
    run_dir = Path(run_dir)
    if not is_run_dir(run_dir):
        raise UserError(f"{run_dir} is not a run directory (it has no config.json).")
    return RunRecord(run_dir, read_config(run_dir), read_metrics(run_dir), read_status(run_dir))


def write_run(out: Path, config: RunConfig, model=None, status: tuple[str, str] | None = None) -> None:
    """Describe a run directory: its weights, empty metrics and status when given (a finished run
    made at once: imported or constructed), then config.json, last, since it marks the directory
    as a run. Training writes config.json alone first, then its metrics and status as it goes."""
    out = Path(out)
    text = config.to_json()  # validated before anything is written
    if model is not None:
        checkpoints.save_weights(model, out / "model.safetensors")
        write_metrics(out, [])
    if status is not None:
        write_status(out, *status)
    files.write_json(out / "config.json", text)


def gather(exp_dir: Path) -> tuple[list[RunRecord], list[tuple[str, str]]]:
    """The runs of an experiment (or of any folder of runs) that belong together, and the (name,
    reason) of every run left out. Runs belong together when they are cells of its experiment.json
    and share its recipe (dataset, schedule, shortcut, width...); without an experiment.json the
    recipe of most runs is the reference."""
    exp_dir = Path(exp_dir)
    record = read_experiment(exp_dir) if os.path.lexists(exp_dir / "experiment.json") else {}
    cells = record.get("cells")
    found, skipped = [], []
    for d in find_runs(exp_dir):
        if isinstance(cells, list) and d != exp_dir and d.name not in cells:
            skipped.append((d.name, "not a cell of this experiment (see its experiment.json)"))
            continue
        try:
            found.append(load_run(d))
        except UserError as e:
            skipped.append((d.name, str(e)))
    reference = record.get("recipe")
    if not isinstance(reference, dict):
        keys = [recipe(r.config.train) for r in found]
        reference = max(keys, key=keys.count) if keys else {}
    together = []
    for r in found:
        changed = differences(reference, recipe(r.config.train), labels=("in the others", "here"))
        if changed:
            skipped.append((r.name, "trained with other settings than the rest (" + "; ".join(changed[:4]) + ")"))
        else:
            together.append(r)
    return together, skipped


Cell = Annotated[str, msgspec.Meta(pattern=r"^[a-z][a-z0-9-]*-[0-9]+-seed[0-9]+$")]


class Experiment(schema.Record):
    """experiment.json: what was asked (kind, grid, recipe); the recipe is a valid TrainConfig's."""

    kind: Literal["demo", "degradation"]
    cells: Annotated[list[Cell], msgspec.Meta(min_length=1, max_length=100_000)]
    recipe: dict[str, Any]
    archs: Annotated[str, msgspec.Meta(max_length=1000)] | UnsetType = UNSET
    dataset: Annotated[str, msgspec.Meta(max_length=5000)] | UnsetType = UNSET
    depths: Annotated[list[Count], msgspec.Meta(max_length=1000)] | UnsetType = UNSET
    seeds: Count | Annotated[list[Count], msgspec.Meta(max_length=10_000)] | UnsetType = UNSET
    epochs: Annotated[float, msgspec.Meta(gt=0, le=schema.BIG)] | None | UnsetType = UNSET
    subset: Count | None | UnsetType = UNSET
    preset: Annotated[str, msgspec.Meta(max_length=100)] | UnsetType = UNSET
    command: Annotated[str, msgspec.Meta(max_length=2000)] | UnsetType = UNSET

    def __post_init__(self):
        try:
            schema.convert(self.recipe, TrainConfig).check_values()
        except (schema.Invalid, UserError) as e:
            raise ValueError(f"recipe.{e}") from None


def read_experiment(exp_dir: Path) -> dict:
    """experiment.json, checked key by key: the content, not the name, proves a folder is an
    experiment of reslab's (a sweep of another tool's may hold a file of that name)."""
    path = Path(exp_dir) / "experiment.json"
    record = files.read_json(path)
    try:
        schema.convert(record, Experiment)
    except schema.Invalid as e:
        raise UserError(f"{path} is not a valid reslab experiment file ({e}).") from None
    return record


def write_experiment(exp_dir: Path, record: dict) -> None:
    """experiment.json, checked as a reader will check it before anything is written."""
    schema.convert(record, Experiment)
    files.write_json(Path(exp_dir) / "experiment.json", record)


def load_runs(exp_dir: Path) -> list[RunRecord]:
    """Every run directory of an experiment that belongs to it."""
    return gather(exp_dir)[0]


def owner(path: Path) -> str | None:
    """'experiment' or 'run' when `path` is a directory reslab made, 'empty' when it holds
    nothing (or only reslab's lock and temporaries), 'runs' when it holds only reslab runs, None
    when it holds anything else."""
    path = Path(path)
    if os.path.lexists(path / "experiment.json"):
        try:
            read_experiment(path)
            return "experiment"
        except UserError:
            return None  # a file of that name is not proof: its content must be reslab's
    if os.path.lexists(path / "config.json"):
        return "run" if is_valid_run(path) else None
    found = files.entries(path)
    if found is None:
        return None  # too many entries to inspect: not a folder reslab made
    own_file = lambda p: files.is_own_entry(p, OWN_NAMES)  # noqa: E731
    if all(own_file(p) for p in found):
        return "empty"
    # A folder of reslab runs and nothing else, as `reslab train` makes them: an experiment may take it.
    own = lambda p: own_file(p) or files.is_real_dir(p) and is_valid_run(p)  # noqa: E731
    return "runs" if all(own(p) for p in found) else None


def is_valid_run(path: Path) -> bool:
    """Whether `path` is a real folder holding a config.json of reslab's (no link followed)."""
    if not files.is_real_dir(path) or not files.is_regular(path / "config.json"):
        return False
    try:
        read_config(path)
        return True
    except UserError:
        return False


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


def find_runs(root: Path) -> list[Path]:
    """Run directories at or directly below `root`, sorted by name."""
    root = Path(root)
    if is_run_dir(root):
        return [root]
    if not root.is_dir():
        return []
    # A link among the runs is not followed: it may lead anywhere, and an --overwrite deletes runs.
    return sorted(p for p in root.iterdir() if files.is_real_dir(p) and is_run_dir(p))


@contextmanager
def run_lock(run_dir: Path):
    """Only one process trains a run directory at a time; a second one is refused. The holder
    removes temporary files that a killed writer left behind (no one else can be writing)."""
    run_dir = Path(run_dir)
    claim_dir(run_dir, "run")
    with files.locked(run_dir, f"another process is writing {run_dir} right now; wait for it to stop."):
        for stale in run_dir.glob(f"{files.TMP_PREFIX}*.tmp"):
            stale.unlink(missing_ok=True)
        if not os.path.lexists(run_dir / files.RECORDS) and is_valid_run(run_dir):
            files.adopt(run_dir, RUN_FILES)  # a run written before reslab kept records: its files are reslab's
        yield
