"""What the files reslab reads back may hold, declared once per file with msgspec.

A run directory may have been edited, damaged or written by another program. Each file's fields
are declared once, as a msgspec Struct or a dataclass of the annotated types below: a metrics row,
status.json, config.json's sections and experiment.json here (config.json as a whole is
runs.RunConfig, of TrainConfig and ModelConfig), a checkpoint's loop state in train.py, and each
analysis's result in its own module (Result). Every value is converted through its declaration
before it is used: damage costs one sentence naming the file and the field, never a traceback or
a verdict built on an impossible number. The byte-level guards (regular files only, size caps,
JSON nested sanely: files.read_json) come first.
"""

from __future__ import annotations

import dataclasses
import re
import sys
from typing import Annotated, Any, Literal, TypeVar

import msgspec
from msgspec import UNSET, UnsetType

from reslab.errors import UserError

MAX_TEXT = 10_000  # characters: no text reslab writes comes near it
BIG = sys.float_info.max  # bounds that shut out inf and nan (nan fails every comparison)

Count = Annotated[int, msgspec.Meta(ge=0, le=2**63 - 1)]
Number = Annotated[float, msgspec.Meta(ge=-BIG, le=BIG)]  # finite
NonNegative = Annotated[float, msgspec.Meta(ge=0, le=BIG)]
Fraction = Annotated[float, msgspec.Meta(ge=0, le=1)]
Text = Annotated[str, msgspec.Meta(max_length=MAX_TEXT)]
Name = Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
Numbers = Annotated[list[Number], msgspec.Meta(min_length=1)]
Precision = Annotated[str, msgspec.Meta(pattern="^(fp32|bf16)$")]  # what `auto` resolved to

T = TypeVar("T")
NonEmpty = Annotated[list[T], msgspec.Meta(min_length=1)]


class Record(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """A file's content, or a part of one: every field declared, no other."""


@dataclasses.dataclass
class Verdict:
    """A claim of the paper judged on measurements (verdicts.py, the analyses, experiment init)."""

    claim: Text
    holds: bool | None  # None: this experiment cannot tell
    text: Text
    testable: bool = True  # False: the claim cannot be tested at this budget (the text says where it can)


class OfRun(Record):
    """What an analysis result records of each run it measured."""

    run: Name
    label: Name
    arch: Name
    depth: Count


class Invalid(ValueError):
    """A value that does not fit its declaration; the message names the field."""


def convert(value: Any, kind: type[T]) -> T:
    """`value` (as JSON gives it) as a `kind`, every field checked, no unknown field taken."""
    try:
        built = msgspec.convert(value, kind)
    except msgspec.ValidationError as e:
        raise Invalid(reason(e)) from None
    # msgspec ignores unknown keys of a dataclass (a Record refuses them itself): compare the keys.
    if extra := unknown(value, msgspec.to_builtins(built, enc_hook=repr)):
        raise Invalid(extra)
    return built


def read(value: Any, kind: type[T], path: object, remedy: str = "Restore it or delete it.") -> T:
    """`convert`, a misfit said as one sentence about the file at `path`, and what to do."""
    try:
        return convert(value, kind)
    except Invalid as e:
        raise UserError(f"{path} is damaged: {e}; it is not a file reslab wrote. {remedy}") from None


def fits(value: Any, kind: Any) -> bool:
    """Whether `value` converts to the type `kind` (ints count as floats, bools as neither)."""
    try:
        msgspec.convert(value, kind)
        return True
    except msgspec.ValidationError:
        return False


def reason(e: msgspec.ValidationError) -> str:
    """msgspec's "Expected `int`, got `str` - at `$.model.depth`" as "model.depth: expected
    `int`, got `str`"."""
    text = str(e)
    what, _, where = text.rpartition(" - at `")
    if not what:
        return text[:1].lower() + text[1:]
    key = where.startswith("key` in `")  # a mapping's key, not its value
    where = re.sub(r"^\$\.?", "", where.rstrip("`").removeprefix("key` in `"))
    where = ("a key of " if key else "") + (where or "the file")
    return f"{where}: {what[:1].lower() + what[1:]}"[:300]


def unknown(given: Any, built: Any, at: str = "") -> str | None:
    """Where `given` has a key that its conversion `built` does not, said as msgspec says it."""
    if isinstance(given, dict) and isinstance(built, dict):
        for k, v in given.items():
            if k not in built:
                return (f"{at.rstrip('.')}: " if at else "") + f"object contains unknown field `{k}`"
            if found := unknown(v, built[k], f"{at}{k}."):
                return found
    elif isinstance(given, list) and isinstance(built, list):
        for i, (v, b) in enumerate(zip(given, built)):
            if found := unknown(v, b, f"{at.rstrip('.')}[{i}]."):
                return found
    return None


# ---------------------------------------------------------------------------------------------
# The run directory's files (runs.py reads and writes them; config.json is runs.RunConfig).


class MetricsRow(Record, kw_only=True):
    """A row of metrics.csv (one evaluation) as training writes it: errors within 0 to 1, the
    rest finite and not negative, the iteration a whole number; an empty column is None."""

    epoch: NonNegative | None = None
    iteration: NonNegative
    lr: NonNegative | None = None
    train_loss: NonNegative | None = None
    train_error: Fraction
    val_loss: NonNegative | None = None
    val_error: Fraction | None = None
    test_loss: NonNegative | None = None
    test_error: Fraction
    seconds: NonNegative | None = None
    images_per_second: NonNegative | None = None

    def __post_init__(self):
        if self.iteration != int(self.iteration):
            raise ValueError(f"iteration {self.iteration:g} is not a whole number")


METRIC_FIELDS = list(MetricsRow.__struct_fields__)


def check_rows(rows: list[dict]) -> None:
    """Rows of metrics as training writes them (MetricsRow), each after the one before."""
    built = []
    for i, row in enumerate(rows):
        try:
            built.append(convert(row, MetricsRow))
        except Invalid as e:
            raise ValueError(f"row {i + 1}: {e}") from None
    in_order(built)


def in_order(rows: list[MetricsRow]) -> None:
    """Each row of a later iteration than the one before (ValueError names the first that is not)."""
    for i in range(1, len(rows)):
        if rows[i].iteration <= rows[i - 1].iteration:
            raise ValueError(f"row {i + 1} has iteration {rows[i].iteration:g}, not after the last row's")


State = Literal["new", "running", "finished", "failed", "diverged", "interrupted"]


class Status(Record):
    """status.json: the run's state and message, and while it trains how far it is and where."""

    state: State
    message: Text = ""
    iteration: Count | UnsetType = UNSET
    total: Count | UnsetType = UNSET
    pid: Count | UnsetType = UNSET
    host: Text | UnsetType = UNSET


# What a network trained elsewhere may not know: how long it trained, on how many images (written as null).
UNKNOWN_OK = ("iterations", "train_size", "test_size")


class Section(Record):
    """A section of config.json: written without the values it does not know (None)."""

    def to_json(self) -> dict:
        return {k: v for k, v in msgspec.structs.asdict(self).items() if v is not None or k in UNKNOWN_OK}


class Resolved(Section):
    """config.json's `resolved`: what a run's settings became (the counts measured on the built
    network, the length in iterations, what each `auto` chose). None: not recorded, as for a
    network trained elsewhere (its length) or one built rather than trained."""

    parameters: Count
    macs: Count
    normalization: dict[str, Numbers] | None = None  # {"mean": [...], "std": [...]}, one value per input channel
    iterations: Count | None = None
    milestones: list[Count] = msgspec.field(default_factory=list)
    epochs: NonNegative | None = None
    steps_per_epoch: Count | None = None
    batch_size: Count | None = None
    batch_per_process: Count | None = None
    processes: Count | None = None
    eval_every: Count | None = None
    augment: bool | None = None
    augment_pad: Count | None = None
    warmup: bool | None = None
    precision: Precision | None = None
    compile: bool | None = None
    cuda_graphs: bool | None = None
    batchnorm: Text | None = None


class DataInfo(Section):
    """config.json's `data`: what the run was trained on (sizes None: not recorded, as for a
    network trained elsewhere)."""

    name: Name
    classes: Annotated[list[Text], msgspec.Meta(min_length=1)]
    image_shape: Annotated[list[Count], msgspec.Meta(min_length=3, max_length=3)]  # channels, height, width
    train_size: Count | None = None
    val_size: Count | None = 0
    test_size: Count | None = None
    source: Text | None = None
    resized_from: Annotated[list[Count], msgspec.Meta(min_length=2, max_length=2)] | None = None
