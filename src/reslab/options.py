"""Command-line options generated from the training settings (config.TrainConfig), and the
argument types every command shares: numbers are finite and in range when they are parsed."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable, Iterable

from reslab.config import CHOICES, GROUPS, MAXIMUM, SETTINGS, default, flag, out_of_range


def positive_int(text: str, minimum: int = 1) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a whole number") from None
    if v < minimum:
        raise argparse.ArgumentTypeError(f"{v} must be positive" if minimum == 1 else f"{v} must be {minimum} or more")
    return v


def non_negative_int(text: str) -> int:
    return positive_int(text, minimum=0)


def number(minimum: float | None = None, strict: bool = False, maximum: float | None = None) -> Callable[[str], float]:
    """A parser of finite numbers from `minimum` on (above it when strict), up to `maximum`."""

    def parse(text: str) -> float:
        try:
            v = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"'{text}' is not a number") from None
        if not math.isfinite(v):
            raise argparse.ArgumentTypeError(f"must be a finite number, got {text}")
        if minimum is not None and (v <= minimum if strict else v < minimum):
            wanted = (
                "a positive number" if strict and minimum == 0 else f"{'above' if strict else 'at least'} {minimum:g}"
            )
            raise argparse.ArgumentTypeError(f"must be {wanted}, got {text}")
        if maximum is not None and v > maximum:
            raise argparse.ArgumentTypeError(f"must be at most {maximum:g}, got {text}")
        return v

    parse.__name__ = "number"  # argparse names the type in its message
    return parse


def int_list(text: str) -> list[int]:
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' must be comma-separated whole numbers, like 20,56") from None


def float_list(text: str) -> list[float]:
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' must be comma-separated numbers, like 0.5,0.5,0.5") from None
    if not all(math.isfinite(v) for v in values):
        raise argparse.ArgumentTypeError(f"'{text}' must be finite numbers")
    return values


def in_range(name: str, parse: Callable[[str], float]) -> Callable[[str], float]:
    """`parse`, then the setting's own range (config.out_of_range) checked as it is parsed."""
    if name not in MAXIMUM:
        return parse

    def check(text: str):
        v = parse(text)
        if problem := out_of_range(name, v):
            raise argparse.ArgumentTypeError(problem)
        return v

    check.__name__ = parse.__name__
    return check


class LazyHelp(str):
    """A help text computed only when help is shown: the architectures' names and depth rules
    come from models.ARCHS, which brings torch, and building the parser must stay fast."""

    def __new__(cls, make, placeholder: str):
        text = super().__new__(cls, placeholder)
        text.make = make  # type: ignore[attr-defined]
        return text

    def __mod__(self, params):
        return self.make() % params  # type: ignore[attr-defined]


def arch_help() -> str:
    from reslab.models import ARCHS

    return f"{', '.join(ARCHS)} (default %(default)s)"


def depth_help() -> str:
    from reslab.models import ARCHS

    rules: dict[str, list[str]] = {}
    for name, a in ARCHS.items():
        rules.setdefault(f"{3 * a.layers_per_block}n+2", []).append(name)
    common, *others = rules
    return common + "".join(f" ({rule} for {', '.join(rules[rule])})" for rule in others) + "; default %(default)s"


LAZY = {"arch": arch_help, "depth": depth_help}


def add_settings(parser: argparse.ArgumentParser, names: Iterable[str], **helps: str) -> None:
    """An option for each training setting in `names`, as its field declares it, listed under
    its group. `helps` replaces a setting's help for this command (its default is still shown)."""
    groups: dict[str, argparse._ArgumentGroup] = {}
    length = None
    for name in names:
        meta = SETTINGS[name].metadata
        group = groups.get(meta["group"]) or groups.setdefault(
            meta["group"], parser.add_argument_group(GROUPS[meta["group"]])
        )
        target: argparse._ActionsContainer = group
        if name in ("iterations", "epochs", "scale"):  # one way to give the length
            length = length or group.add_mutually_exclusive_group()
            target = length
        target.add_argument(flag(name), dest=name, **option_kwargs(name, helps.get(name)))


def add_overwrite(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace files in the output folder that reslab did not write (without it, they are refused)",
    )


def option_kwargs(name: str, help: str | None = None) -> dict:
    """add_argument's keywords for a training setting: type, choices, default, help."""
    field, meta = SETTINGS[name], SETTINGS[name].metadata
    value = default(name)
    help = help or meta["help"]
    kind = str(field.type).removesuffix(" | None")
    if kind == "bool":
        return {"action": "store_false" if value else "store_true", "help": help}
    kw: dict = {"default": value, "metavar": meta.get("metavar")}
    if name in CHOICES:
        kw.update(choices=CHOICES[name], metavar=None)
    elif kind == "int":
        kw["type"] = in_range(name, positive_int if meta.get("minimum") == 1 else non_negative_int)
    elif kind == "float":
        kw["type"] = in_range(name, number(meta.get("minimum"), meta.get("strict", False)))
    elif kind == "list[float]":
        kw["type"] = float_list
    shown = value if not isinstance(value, list) else ",".join(f"{v:g}" for v in value)
    suffix = "" if value is None else f"; default {shown}"
    kw["help"] = LazyHelp(LAZY[name], f"{help}{suffix}") if name in LAZY else help + suffix.replace("%", "%%")
    return kw
