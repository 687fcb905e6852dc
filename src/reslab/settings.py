"""Settings layered once, by the parser: its defaults < a preset < a --config file (or the run or
experiment being resumed) < what was typed. Each layer becomes the command parser's defaults
(set_defaults) and the command line is parsed again, so an option typed in any spelling argparse
accepts wins; nothing scans argv. Imports no torch."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

from reslab import config, schema
from reslab.config import SETTINGS, TYPES, TrainConfig, flag, out_of_range
from reslab.errors import UserError
from reslab.options import int_list, non_negative_int, positive_int
from reslab.presets import PRESETS

# A command's options that are no settings: where it writes and what it does this time.
NOT_SETTINGS = {
    "help",
    "out",
    "config",
    "print_config",
    "resume",
    "overwrite",
    "no_progress",
    "command",
    "kind",
    "quiet",
    "verbose",
}
LENGTHS = ("iterations", "epochs", "scale")
# Where data is kept and how fast a run trains are this machine's business: never taken from a
# run's config.json, which may come from another machine (a YAML file the user wrote may set them).
MACHINE = ("data_dir", "download")
# Settings a resumed run may change: where and how fast it trains, never what it learns.
PLUMBING = {"device", "compile", "cuda_graphs", "tensorboard", "data_dir", "download", "jobs", "channels_last"}


def names(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    """The settings a command takes, by name, with their options."""
    return {a.dest: a for a in parser._actions if a.dest not in NOT_SETTINGS and a.option_strings}


def layered(parser: argparse.ArgumentParser, args: argparse.Namespace) -> dict[str, Any]:
    """The values of every layer between the parser's defaults and the command line."""
    known = names(parser)
    from_file = read_file(Path(args.config), known) if getattr(args, "config", None) else {}
    values: dict[str, Any] = {}
    if getattr(args, "kind", None) == "init":  # the init experiment's own defaults, under everything else
        from reslab.init_study import DEFAULTS

        values.update(DEFAULTS)
    preset = from_file.pop("preset", None) or getattr(args, "preset", None)
    if preset:
        values.update(preset_values(preset, known), **({"preset": preset} if "preset" in known else {}))
    values.update(from_file)
    if getattr(args, "resume", None):
        values.update(resumed(args, known))
    return values


def parse(parser: argparse.ArgumentParser, command: argparse.ArgumentParser, argv: list[str]) -> argparse.Namespace:
    """The command line parsed over the layers; `args.layered` keeps what the layers said."""
    args = parser.parse_args(argv)
    values = layered(command, args)
    if values:
        command.set_defaults(**values)
        args = parser.parse_args(argv)
        lengths = [k for k in LENGTHS if getattr(args, k, None) is not None]
        if len(lengths) > 1:  # a length typed in another unit replaces the layers' one
            for k in lengths:
                if values.get(k) == getattr(args, k):
                    setattr(args, k, None)
    args.layered = values
    return args


def preset_values(name: str, known: dict) -> dict:
    if name not in PRESETS:
        raise UserError(f"unknown preset '{name}': choose one of {', '.join(sorted(PRESETS))}.")
    preset = PRESETS[name]
    values = {"depths": preset.depths, "seeds": preset.seeds, **preset.train}
    return {k: v for k, v in values.items() if k in known}


def read_file(path: Path, known: dict) -> dict:
    """The settings of a --config file: a run's config.json (its train section), or a YAML or
    JSON mapping of setting names (as --print-config writes). Unknown keys are refused."""
    import yaml

    from reslab import files

    try:  # the user's own file: a link to it is followed, a FIFO or a huge file is not read
        text = files.read_regular(path.resolve(), 2**20, "settings file").decode()
        found = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as e:  # UnicodeDecodeError is a ValueError
        raise UserError(
            f"--config {path} is not valid {'JSON' if path.suffix == '.json' else 'YAML'}: "
            f"{' '.join(str(e).split())[:300]}."
        ) from None
    if isinstance(found, dict) and isinstance(found.get("train"), dict):
        found = {k: v for k, v in found["train"].items() if k not in MACHINE}  # a run's config.json
    if not isinstance(found, dict):
        raise UserError(
            f"--config {path} is not a reslab config.json or settings file: it must hold a mapping of settings to "
            "values, like the one --print-config prints."
        )
    found = {str(k).replace("-", "_"): v for k, v in found.items()}
    unknown = sorted(k for k in found if k not in known and k != "preset" and k not in SETTINGS)
    if unknown:
        raise UserError(f"--config {path} has settings this command does not take: {', '.join(unknown)[:300]}.")
    for k, v in found.items():
        check_value(k, v, known.get(k), f"--config {path}")
    # A training setting this command does not take is refused unless it holds its default, so
    # that no setting of the file is silently dropped (the grid's own axes replace arch, depth, seed).
    dropped = [
        k
        for k, v in found.items()
        if k in SETTINGS
        and k not in known
        and k not in config.GRID_KEYS
        and k not in MACHINE
        and v != config.default(k)
    ]
    if dropped:
        raise UserError(
            f"--config {path} sets {', '.join(config.flag(k) for k in dropped)[:300]}, which this command does not "
            "take, so it would have no effect. Leave it out of the file"
            + (", or use reslab experiment, which takes every training setting." if "lr" not in known else ".")
        )
    return {k: v for k, v in found.items() if k in known or k == "preset"}


def check_value(name: str, v: Any, action: argparse.Action | None, where: str) -> None:
    """A value read from a file: of the type its option parses to, and in range."""
    if name in SETTINGS:
        kind = str(SETTINGS[name].type)
        problem = None if schema.fits(v, TYPES[name]) else f"must be {kind.replace('|', 'or')}"
        problem = problem or out_of_range(name, v)
    elif name == "preset":
        problem = None if v is None or v in PRESETS else f"must be one of {', '.join(PRESETS)}"
    else:
        problem = other_value_problem(v, action)
    if problem:
        label = flag(name) if name in SETTINGS else name
        raise UserError(f"{where}: {label} {problem}" + ("." if "got" in problem else f", got {v!r}."))


def other_value_problem(v: Any, action: argparse.Action | None) -> str | None:
    """What is wrong with a file's value for an option that is not a training setting."""
    if action is None or (v is None and action.default is None):
        return None
    if action.choices is not None:
        return None if v in action.choices else f"must be one of {', '.join(map(str, action.choices))}"
    if action.type in (positive_int, non_negative_int):
        low = 1 if action.type is positive_int else 0
        return None if type(v) is int and v >= low else f"must be a whole number from {low} on"
    if action.type is int_list:
        return None if isinstance(v, list) and all(type(d) is int for d in v) else "must be a list of whole numbers"
    if isinstance(action.default, bool):
        return None if isinstance(v, bool) else "must be true or false"
    if isinstance(v, float) and not math.isfinite(v):
        return "must be finite"
    return None if v is None or isinstance(v, (str, int, float)) else "must be a single value"


def resumed(args: argparse.Namespace, known: dict) -> dict:
    """The settings of the run (train) or experiment being resumed: its directory is enough."""
    from reslab import files, runs

    out = Path(resume_dir(args))
    if (out / "init.json").exists() and "scales" in known:  # an init experiment: its grid and one scale's recipe
        from reslab.init_study import InitRecord

        scales = schema.read(files.read_json(out / "init.json"), InitRecord, out / "init.json").scales
        if not (out / f"scale-{scales[0]:g}").is_dir():
            raise UserError(f"{out}/init.json is not an init experiment's record; run the experiment again.")
        values = resumed_grid(out / f"scale-{scales[0]:g}", known)
        values.pop("block_gamma", None)
        return {**values, "scales": scales, "kind": "init"}
    if (out / "experiment.json").exists() and "archs" in known:
        return resumed_grid(out, known)
    if runs.is_run_dir(out) and "arch" in known:
        train = runs.read_config(out).train
        return {k: v for k, v in vars(train).items() if k in known and k not in MACHINE}
    return {}


def resumed_grid(exp: Path, known: dict) -> dict:
    """The settings of the experiment in `exp`, from its experiment.json."""
    from reslab import runs

    record = runs.read_experiment(exp)
    seeds = sorted({int(c.rsplit("seed", 1)[1]) for c in record["cells"]})
    values = {**record["recipe"], "archs": record.get("archs"), "depths": record.get("depths")}
    values.update(seeds=len(seeds), seed=seeds[0])
    return {k: v for k, v in values.items() if k in known and v is not None}


def resume_dir(args: argparse.Namespace) -> str:
    """--resume DIR, or --resume with --out DIR."""
    where = args.resume if isinstance(args.resume, str) else args.out
    if where is None:
        raise UserError("--resume needs the directory to continue: --resume DIR, or --resume --out DIR.")
    if isinstance(args.resume, str) and args.out not in (None, args.resume):
        raise UserError(f"--resume {args.resume} and --out {args.out} name two directories; give one.")
    args.out = where
    return where


def refuse_recipe_changes(args: argparse.Namespace, cfg: TrainConfig) -> None:
    """A resumed run continues as it was configured: a typed flag that changes what it learns is
    refused with the differences (where and how fast it trains may change)."""
    from dataclasses import asdict

    old = {k: v for k, v in args.layered.items() if k in SETTINGS}
    new = {k: v for k, v in asdict(cfg).items() if k in old}
    changed = config.differences(old, new, ignore=tuple(PLUMBING), labels=("in the run", "asked"))
    if changed:
        raise UserError(
            f"--resume continues {args.out} with the settings it was started with; these flags change them: "
            f"{'; '.join(changed[:6])}. Leave them out (device, compile and tensorboard may change), or train "
            "into another --out."
        )


def as_yaml(args: argparse.Namespace, parser: argparse.ArgumentParser) -> str:
    """The resolved settings of a command as YAML that --config takes back."""
    import yaml

    values = {k: getattr(args, k) for k in names(parser) if hasattr(args, k)}
    return yaml.safe_dump(values, sort_keys=False, default_flow_style=None)
