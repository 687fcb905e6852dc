"""The commands behind the command line: each takes the parsed (and layered) options, calls the
library and prints what it returns. Imported once a command runs, so it may bring torch."""

from __future__ import annotations

import argparse
import re
import sys
import time
from dataclasses import fields
from pathlib import Path

from reslab import settings
from reslab.config import TrainConfig, refuse_unused
from reslab.errors import UserError
from reslab.presets import PRESETS


def config_from_args(args: argparse.Namespace, **overrides) -> TrainConfig:
    """A TrainConfig from the parsed options that share its field names."""
    given = {f.name: getattr(args, f.name) for f in fields(TrainConfig) if hasattr(args, f.name)}
    return TrainConfig(**{**given, **overrides})


def cmd_train(args) -> int:
    from reslab.distributed import env_rank
    from reslab.train import Diverged, Interrupted, train

    if args.resume:
        settings.resume_dir(args)
    if args.out is None:
        raise UserError("give the run directory to write with --out DIR.")
    cfg = config_from_args(args)
    if not args.resume:
        cfg.validate()
        refuse_unused([cfg])
    if args.resume and args.layered:
        settings.refuse_recipe_changes(args, cfg)
    elif args.config:
        from dataclasses import asdict

        from reslab.config import differences

        file_values = {k: v for k, v in args.layered.items() if k in asdict(cfg)}
        changed = differences(file_values, {k: getattr(cfg, k) for k in file_values}, ignore=())
        if changed and not args.quiet:
            print(f"training the settings of --config {args.config}, except: {'; '.join(changed)}")
    main = env_rank() == 0  # under torchrun, rank 0 speaks for all
    try:
        row = train(cfg, args.out, resume=bool(args.resume), progress=False if args.no_progress else None)
    except (Interrupted, Diverged) as e:
        if main:
            print(f"reslab: {e}", file=sys.stderr)
        return 130 if isinstance(e, Interrupted) else 1
    if row and main:
        print(
            f"{args.out}: training error {row['train_error']:.2%}, test error {row['test_error']:.2%} "
            f"after {int(row['iteration'])} iterations"
        )
    return 0


def cmd_demo(args) -> int:
    from reslab.demo import demo
    from reslab.experiment import LocalBackend

    t0 = time.perf_counter()
    cfg = config_from_args(args)
    backend = LocalBackend(args.jobs)
    result = demo(cfg, Path(args.out), args.archs, args.depths, args.seeds, backend, args.overwrite, args.seed)
    code = show_grid(result, args.quiet)
    if not args.quiet:
        print(f"demo finished in {time.perf_counter() - t0:.0f} s")
    return code


def show_grid(result, quiet: bool) -> int:
    """A grid's table, verdicts and findings (unless quiet), the report's path, and which runs did
    not finish (exit status 1 if any)."""
    from reslab.summary import crossover_line, summary_table
    from reslab.verdicts import mark

    if not quiet:
        for name, why in result.skipped:
            print(f"left out of the summary: {name}: {why}")
        print(f"\n{summary_table(result.summary)}\n")
        for v in result.verdicts:
            print(f"[{mark(v.holds, v.testable)}] {v.claim}: {v.text}")
        for c in result.crossovers:
            print(crossover_line(c))
        for line in result.findings:
            print(line)
        print()
    print(f"report: {result.report}")
    if result.failed:
        names = ", ".join(f"{o.name} ({o.state})" for o in result.failed)
        print(f"{len(result.failed)} run(s) did not finish: {names}", file=sys.stderr)
        return 1
    return 0


def cmd_experiment(args) -> int:
    from reslab.experiment import report, run_grid, split_archs

    if args.resume and not any((Path(args.out) / f).exists() for f in ("experiment.json", "init.json")):
        raise UserError(f"--resume: {args.out} holds no experiment to continue (no experiment.json).")
    base = config_from_args(args)
    if args.resume and args.layered:
        settings.refuse_recipe_changes(args, base)
    spec = {"kind": args.kind, "archs": args.archs, "depths": args.depths, "seeds": args.seeds}
    if args.preset:
        spec["preset"] = args.preset
        preset = PRESETS[args.preset]
        if not args.quiet:
            print(f"preset {preset.name}: {preset.summary}; departures from the paper:")
            for d in preset.in_force(vars(args)):
                if not (args.kind == "init" and "block_gamma" in d.fields):  # init varies it: --scales
                    print(f"  {d.setting}: {d.preset} (paper: {d.paper})")
    out = Path(args.out)
    cells = (split_archs(args.archs), args.depths, list(range(args.seed, args.seed + args.seeds)))
    if args.kind == "init":
        return cmd_init(args, base, cells, {**spec, "kind": "degradation"})
    if args.scales is not None:
        raise UserError("--scales belongs to the init experiment: reslab experiment init --scales 1,0.3,0.")
    result = run_grid(out, base, *cells, spec, make_backend(args), args.overwrite)
    return show_grid(report(out, result), args.quiet)


def cmd_init(args, base: TrainConfig, cells: tuple[list[str], list[int], list[int]], spec: dict) -> int:
    """`reslab experiment init`: a grid at each initial scale, then the study across scales."""
    from reslab import init_study
    from reslab.verdicts import mark

    scales = args.scales if args.scales is not None else list(init_study.SCALES)
    if not args.preset and (base.iterations, base.epochs, base.scale) == (None, None, None):
        from reslab.demo import demo_config  # demo-sized: the demo's recipe (its block scale aside)

        base = demo_config(base)
    archs, depths, seeds = cells
    found = init_study.run(Path(args.out), base, archs, depths, seeds, scales, spec, make_backend(args), args.overwrite)
    if not args.quiet:
        print()
        for r in sorted(found["runs"], key=lambda r: (-r["scale"], r["arch"], r["depth"], r["seed"])):
            ratio = "" if r["end_ratio"] is None else f", blocks' ‖F‖/‖x‖ {r['init_ratio']:.2f} -> {r['end_ratio']:.2f}"
            print(f"scale {r['scale']:<4g} {r['label']:<10} seed {r['seed']}: training error "
                  f"{100 * r['train_error']:5.1f}%, test error {100 * r['test_error']:5.1f}%{ratio}")  # fmt: skip
        print()
        for v in found["verdicts"]:
            print(f"[{mark(v['holds'], v['testable'])}] {v['claim']}: {v['text']}")
        print()
    print(f"report: {found['report']}")
    failed = [o for g in found["grids"].values() for o in g.failed]
    return 1 if failed else 0


def make_backend(args):
    """The backend an experiment's options ask for, built here at the edge."""
    if args.backend == "ray":
        from reslab.ray_backend import RayBackend

        return RayBackend(args.address, args.runs_per_gpu, args.cpus_per_run, args.retries)
    from reslab.experiment import LocalBackend

    return LocalBackend(args.jobs, args.runs_per_gpu, args.share_gpu)


def cmd_report(args) -> int:
    from reslab.report import write_report

    path = Path(args.dir)
    if not path.is_dir():
        raise UserError(f"{path} is not a directory; give a demo or experiment directory (for example runs/demo).")
    print(f"report: {write_report(path)}")
    return 0


def cmd_eval(args) -> int:
    from reslab.evaluate import evaluate_run

    result = evaluate_run(Path(args.run_dir), args.dataset, args.data_dir, args.download, args.device, args.precision)
    print(
        f"{args.run_dir} on {result['dataset']} test set ({result['images']} images, {result['precision']}"
        f"{', as the run evaluated' if result['as_run'] else ''}): loss {result['loss']:.4f}, "
        f"error {result['error']:.2%}, accuracy {1 - result['error']:.2%}"
    )
    return 0


def cmd_import(args) -> int:
    from reslab.pretrained import NAMED, fetch_named, import_checkpoint

    path = Path(args.file)
    if args.file in NAMED and not path.exists():
        path = fetch_named(args.file)
    elif not path.exists() and re.fullmatch(r"resnet\d+", args.file):
        raise UserError(f"no pretrained network called {args.file}: the names are {', '.join(NAMED)}; or give a file.")
    config = import_checkpoint(path, Path(args.out), args.mean, args.std, args.dataset)
    extra = (config.imported or {}).get("extra", {}).get("best_prec1")
    print(
        f"imported ResNet-{config.model.depth} ({config.parameters:,} parameters) into {args.out}"
        + (f"; the file reports a best test accuracy of {extra:.2f}%" if isinstance(extra, float) else "")
    )
    print(f"score it with: reslab eval {args.out} --dataset {args.dataset}")
    return 0


def cmd_models(args) -> int:
    from reslab.models import table

    try:
        shape = tuple(int(v) for v in args.input.lower().split("x"))
        assert len(shape) == 3 and min(shape) > 0
    except (ValueError, AssertionError):
        raise UserError(f"--input '{args.input}' must look like 3x32x32 (channels x height x width).") from None
    c, h, w = shape
    rows = table(args.depths, (c, h, w), args.classes)
    width = max([len("architecture")] + [len(r[0]) for r in rows]) + 2
    print(f"{'architecture':<{width}}{'depth':>6}{'parameters':>13}{f'MACs (M, {c}x{h}x{w})':>20}")
    for name, depth, params, macs in rows:
        print(f"{name:<{width}}{depth:>6}{params:>13,}{macs / 1e6:>20.2f}")
    print("plain and resnet (option A) have the same parameters and MACs: the identity shortcuts are free.")
    return 0


def cmd_datasets(args) -> int:
    from reslab.data import describe_datasets

    found = describe_datasets(args.data_dir)
    width = max(len(name) for name, _ in found) + 2
    for name, where in found:
        print(f"{name:<{width}}{where}")
    return 0


def cmd_analyze(args) -> int:
    from reslab.analysis import load

    m = load(args.analysis)
    result, out = m.command(args)
    for line in [] if args.quiet else m.summary(result):
        print(line)
    print(f"results in {out / 'analyses'}; run `reslab report {out}` to include them")
    return 0


COMMANDS = {
    "demo": cmd_demo,
    "experiment": cmd_experiment,
    "report": cmd_report,
    "train": cmd_train,
    "import": cmd_import,
    "analyze": cmd_analyze,
    "eval": cmd_eval,
    "models": cmd_models,
    "datasets": cmd_datasets,
}
