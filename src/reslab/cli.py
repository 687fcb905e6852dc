"""Command line: argument parsing only; the work is done by the library's functions.

torch is imported inside the commands, so `reslab --help` stays fast.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from reslab.errors import ExperimentInterrupted, UserError

EPILOG = "Run 'reslab COMMAND --help' for a command's options. Start with: reslab demo"


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


def int_list(text: str) -> list[int]:
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' must be comma-separated whole numbers, like 20,56") from None


def float_list(text: str) -> list[float]:
    try:
        return [float(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' must be comma-separated numbers, like 0.5,0.5,0.5") from None


def add_data_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--dataset",
        default="cifar10",
        help="cifar10, cifar100, mnist, fashion-mnist, digits, synthetic or imagefolder:PATH (default %(default)s)",
    )
    p.add_argument(
        "--data-dir", help="where datasets are found or downloaded (default ~/.cache/reslab/data, or $RESLAB_DATA)"
    )
    p.add_argument(
        "--no-download",
        dest="download",
        action="store_false",
        help="never download; fail with a message if the data is missing",
    )
    p.add_argument("--subset", type=positive_int, help="train on a class-balanced subset of N training images")
    p.add_argument(
        "--test-subset",
        type=non_negative_int,
        metavar="N",
        help="evaluate on N class-balanced test images (default: in proportion to --subset, all without it; 0: all)",
    )
    p.add_argument(
        "--val-split",
        type=int,
        default=0,
        metavar="N",
        help="hold out N training images for validation (the paper used 5000); default 0",
    )


def add_schedule_options(p: argparse.ArgumentParser) -> None:
    length = p.add_mutually_exclusive_group()
    length.add_argument("--iterations", type=positive_int, help="length of the run (default: the paper's 64000)")
    length.add_argument("--epochs", type=float, help="length of the run in epochs")
    length.add_argument("--scale", type=float, help="fraction of the paper's 64k iterations")
    p.add_argument("--batch-size", type=positive_int, default=128)
    p.add_argument("--lr", type=float, default=0.1)
    p.add_argument("--momentum", type=float, default=0.9)
    p.add_argument("--weight-decay", type=float, default=1e-4)
    p.add_argument(
        "--warmup",
        choices=["auto", "on", "off"],
        default="auto",
        help="lr 0.01 until training error < 80%%, then 0.1 (auto: on for depth >= 110, as in the paper)",
    )
    p.add_argument(
        "--augment",
        choices=["auto", "on", "off"],
        default="auto",
        help="pad-crop-flip (auto: on for natural images, off for digits)",
    )
    p.add_argument("--eval-every", type=positive_int, help="iterations between evaluations (default: one epoch)")
    p.add_argument(
        "--precision",
        choices=["auto", "fp32", "bf16"],
        default="auto",
        help="auto: bf16 autocast where the hardware runs it natively (CUDA, AVX-512 BF16), else fp32",
    )
    p.add_argument(
        "--compile",
        choices=["auto", "on", "off"],
        default="auto",
        help="torch.compile the training step (auto: for runs of 4000 iterations or more)",
    )
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")


def add_model_options(p: argparse.ArgumentParser, depth_default=20) -> None:
    p.add_argument("--arch", default="resnet", help="plain, resnet, preact or preact-bottleneck (default resnet)")
    p.add_argument("--depth", type=int, default=depth_default, help="6n+2 (9n+2 for preact-bottleneck)")
    p.add_argument(
        "--shortcut",
        choices=["A", "B", "C"],
        help="A: zero-padding identity (default), B: projection where the shape changes, C: always",
    )
    p.add_argument("--width", type=positive_int, default=16, help="filters in the first stage (default 16)")


def add_overwrite_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="delete the runs in --out that were trained with other settings and train them anew "
        "(without it, such a directory is refused)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="reslab",
        description="A laboratory for residual networks "
        "(He et al. 2016): the degradation problem and its cure, measured.",
        epilog=EPILOG,
    )
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser(
        "demo",
        help="the degradation problem and its cure, in about 40 s on a 2-core CPU (start here)",
        description="Train plain and residual nets of two depths, print the table and the verdicts "
        "computed from them, and write an experiment directory with report.html.",
    )
    p.add_argument(
        "--dataset",
        default="digits",
        help="default digits (embedded, no download); also cifar10, imagefolder:PATH, ...",
    )
    p.add_argument("--data-dir")
    p.add_argument("--no-download", dest="download", action="store_false")
    p.add_argument("--archs", default="plain,resnet", help="default %(default)s")
    p.add_argument("--depths", type=int_list, default=[20, 56], help="default 20,56")
    p.add_argument("--seeds", type=positive_int, default=1, help="number of seeds (0..N-1), default 1")
    p.add_argument("--epochs", type=float, help="default 30 on digits, 15 elsewhere")
    p.add_argument(
        "--subset", type=positive_int, help="training images (default: all on digits, 5000 elsewhere on a CPU)"
    )
    p.add_argument("--jobs", type=positive_int, help="parallel training processes (default: one per core, one per GPU)")
    p.add_argument("--device", default="auto")
    p.add_argument("--out", default="runs/demo", help="experiment directory (default %(default)s)")
    add_overwrite_option(p)

    p = sub.add_parser(
        "experiment",
        help="a grid of runs: the paper's degradation experiment",
        description="Run every (architecture, depth, seed) cell as an ordinary run directory, "
        "skipping finished cells and resuming interrupted ones, then summarise, plot and "
        "report.",
    )
    p.add_argument("kind", choices=["degradation"], help="the experiment (degradation: Fig. 1, Fig. 6, Table 6)")
    p.add_argument("--archs", default="plain,resnet", help="default %(default)s")
    p.add_argument("--depths", type=int_list, default=[20, 32, 44, 56], help="default 20,32,44,56")
    p.add_argument("--seeds", type=positive_int, default=1, help="number of seeds (0..N-1), default 1")
    p.add_argument("--shortcut", choices=["A", "B", "C"])
    add_data_options(p)
    add_schedule_options(p)
    p.add_argument(
        "--jobs",
        type=positive_int,
        help="local backend: parallel training processes (default: one per core on CPU, --runs-per-gpu per GPU)",
    )
    p.add_argument(
        "--backend",
        choices=["local", "ray"],
        default="local",
        help="local: processes on this machine (default); ray: one Ray task per run, on a cluster "
        "(needs: pip install 'reslab[ray]')",
    )
    p.add_argument(
        "--address",
        help="ray backend: the cluster to join (auto, HOST:6379 or ray://HOST:10001; default: start Ray here)",
    )
    p.add_argument(
        "--runs-per-gpu",
        type=positive_int,
        default=1,
        help="networks trained at once on one GPU (each run asks for 1/N of a GPU); default 1",
    )
    p.add_argument("--cpus-per-run", type=positive_int, help="ray backend: CPUs each run asks for (default 1)")
    p.add_argument(
        "--retries",
        type=non_negative_int,
        default=3,
        help="ray backend: times a run whose worker died is restarted from its checkpoint (default 3)",
    )
    p.add_argument(
        "--out",
        default="runs/degradation",
        help="experiment directory (default %(default)s); with a Ray cluster, on storage every node sees",
    )
    add_overwrite_option(p)

    p = sub.add_parser("train", help="train one network into a run directory")
    add_model_options(p)
    add_data_options(p)
    add_schedule_options(p)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, help="run directory to write")
    p.add_argument(
        "--config",
        help="rebuild a run from its config.json: its training configuration replaces the "
        "model, data and schedule options above",
    )
    p.add_argument("--resume", action="store_true", help="continue the interrupted run in --out exactly")
    p.add_argument("--no-progress", action="store_true", help="one line per evaluation instead of a progress bar")
    p.add_argument(
        "--init-from",
        help="start from these weights (a model.safetensors, for example of a constructed net) instead of He init",
    )
    p.add_argument(
        "--tensorboard",
        action="store_true",
        help="also write TensorBoard event files to OUT/tensorboard (needs: pip install 'reslab[tensorboard]')",
    )
    p.add_argument(
        "--sync-bn",
        action="store_true",
        help="under torchrun: BatchNorm statistics over the whole global batch (default: per process, as in the paper)",
    )

    p = sub.add_parser("report", help="write the self-contained HTML report of a demo or experiment directory")
    p.add_argument("dir")

    p = sub.add_parser("eval", help="test loss and error of a run's final weights")
    p.add_argument("run_dir")
    p.add_argument("--dataset", help="evaluate on another dataset (default: the run's own)")
    p.add_argument("--data-dir")
    p.add_argument("--no-download", dest="download", action="store_false")
    p.add_argument("--device", default="auto")

    add_analyze_parsers(sub)

    p = sub.add_parser(
        "import",
        help="turn a pretrained CIFAR ResNet checkpoint into a run directory",
        description="Read a checkpoint in the common PyTorch CIFAR ResNet layout ({'state_dict': ...} "
        "with module. prefixes, option-A shortcuts) safely (weights_only) and write a "
        "run directory that every analysis and `reslab eval` can use.",
    )
    p.add_argument("file")
    p.add_argument("--out", required=True, help="run directory to write")
    p.add_argument(
        "--mean",
        type=float_list,
        help="input normalisation the checkpoint was trained with (default: ImageNet's 0.485,0.456,0.406)",
    )
    p.add_argument("--std", type=float_list, help="default: ImageNet's 0.229,0.224,0.225")
    p.add_argument("--dataset", default="cifar10", help="the dataset it was trained on (default %(default)s)")

    p = sub.add_parser("models", help="table of architectures with depth, parameters and MACs")
    p.add_argument("--depths", type=int_list, default=[20, 32, 44, 56, 110])
    p.add_argument("--input", default="3x32x32", help="CxHxW of the input (default 3x32x32)")
    p.add_argument("--classes", type=positive_int, default=10)

    p = sub.add_parser("datasets", help="which datasets are available offline, and where")
    p.add_argument("--data-dir")

    return parser


ANALYZE_HELP = {
    "responses": "layer responses (Fig. 7): std of each 3x3 layer's output after BN, before ReLU/addition, over "
    "the test set in eval mode, pooled over images, channels and positions; the mean per-channel std and |gamma| "
    "are reported beside it",
    "construct": "build a deeper net from a trained shallower one plus identity layers (Dirac convs with "
    "pass-through BN for plain nets, zeroed residual branches for residual nets); check it computes the same "
    "function, and compare its training error with SGD's from scratch",
    "identity": "train k residual blocks and 2k plain conv-BN-ReLU layers (the same number of 3x3 convs) to "
    "reproduce their (non-negative) input; the relative error left against depth",
    "lesion": "delete each residual block in turn at test time (keeping its shortcut), then k random blocks "
    "(Veit et al. 2016); in plain nets a deleted block passes its input on, where the shape allows",
    "gradients": "per-layer gradient norms at initialisation and after training (train-mode BN, one batch), and "
    "the correlation of input gradients at neighbouring inputs against depth (shattered gradients, at init)",
    "landscape": "loss along filter-normalised random directions (Li et al. 2018), 1D and 2D, BN in eval mode, "
    "on a fixed subset of the training images",
}


def add_analyze_parsers(sub) -> None:
    p = sub.add_parser(
        "analyze", help="why residual learning works: responses, construct, identity, lesion, gradients, landscape"
    )
    asub = p.add_subparsers(dest="analysis", metavar="ANALYSIS", required=True)
    for name, text in ANALYZE_HELP.items():
        timing = (
            " On a terminal a progress bar shows how far it is and how long it will take."
            if name in ("identity", "lesion", "gradients", "landscape")
            else ""
        )
        a = asub.add_parser(name, help=text.split(":")[0].split(";")[0], description=text + "." + timing)
        if name == "construct":
            a.add_argument("--from", dest="source", required=True, help="the trained shallower run directory")
            a.add_argument("--depth", type=int, required=True, help="depth of the constructed network")
            a.add_argument(
                "--compare",
                help="run trained from scratch at --depth (default: a sibling ARCH-DEPTH-seedS run next to --from)",
            )
        elif name != "identity":
            a.add_argument("runs", nargs="+", help="run directories")
        if name == "identity":
            a.add_argument(
                "--max-layers",
                type=positive_int,
                default=10,
                help="largest k, in residual blocks (default %(default)s)",
            )
            a.add_argument("--steps", type=positive_int, default=400, help="training steps per stack")
            a.add_argument("--out", required=True, help="directory to write analyses/ and figures/ into")
            continue
        a.add_argument("--dataset", help="dataset to use (default: each run's own)")
        a.add_argument("--data-dir")
        a.add_argument(
            "--out", help="directory to write analyses/ and figures/ into (default: the runs' experiment directory)"
        )
        if name in ("responses", "lesion", "construct"):
            a.add_argument("--limit", type=positive_int, help="use at most N images (default: all)")
        if name == "responses":
            a.add_argument("--split", choices=["test", "train"], default="test")
        if name == "lesion":
            a.add_argument("--samples", type=positive_int, default=10, help="random draws per k (default 10)")
        if name == "gradients":
            a.add_argument(
                "--depths",
                type=int_list,
                default=[8, 20, 56, 110],
                help="depths for the shattering curve (default 8,20,56,110)",
            )
            a.add_argument("--images", type=positive_int, default=128, help="batch for the gradient norms")
            a.add_argument("--points", type=positive_int, default=128, help="inputs along each line")
            a.add_argument(
                "--lines",
                type=positive_int,
                default=4,
                help="lines (each through its own image, along its own random direction) averaged (default 4)",
            )
        if name == "landscape":
            a.add_argument("--resolution", type=positive_int, default=21, help="grid points per axis (default 21)")
            a.add_argument("--span", type=float, default=1.0, help="coordinates run from -span to span")
            a.add_argument("--images", type=positive_int, default=2000, help="training images (default 2000)")
            a.add_argument("--precision", choices=["auto", "fp32", "bf16"], default="auto")


def cmd_analyze(args) -> int:
    from reslab import analyze

    name = args.analysis
    if name == "identity":
        from reslab.analysis.identity import finding

        f = finding(analyze.run_identity(Path(args.out), args.max_layers, args.steps))
        print(f"[{mark(f['holds'])}] {f['claim']}: {f['text']}")
        print(f"results: {Path(args.out) / 'analyses' / 'identity.json'}")
        return 0
    data = {"dataset": args.dataset, "data_dir": args.data_dir}
    if name == "construct":
        r = analyze.run_construct(
            Path(args.source), args.depth, args.out, Path(args.compare) if args.compare else None, args.limit, **data
        )
        print(
            f"{r['source_label']} extended to depth {r['depth']} with {r['identity_blocks']} identity blocks: "
            f"max |difference| of the outputs {r['max_abs_difference']:.2e} on {r['images']} training images; "
            f"training error {r['source_train_error']:.2%} (shallow) and {r['constructed_train_error']:.2%} "
            "(constructed)"
            + (
                f"; SGD from scratch at depth {r['depth']} ({r['scratch']}): {r['scratch_train_error']:.2%}"
                if "scratch" in r
                else ""
            )
        )
        return 0
    run_dirs = [Path(d) for d in args.runs]
    if name == "responses":
        r = analyze.run_responses(run_dirs, args.out, args.split, args.limit, **data)
        for run in r["runs"]:
            stds = [x["std"] for x in run["layers"]]
            print(
                f"{run['label']}: response std over {len(stds)} 3x3 layers: mean {sum(stds) / len(stds):.3f}, "
                f"first {stds[0]:.3f}, last {stds[-1]:.3f}"
            )
        for f in r["findings"]:
            print(f"[{mark(f['holds'])}] {f['claim']}: {f['text']}")
    elif name == "lesion":
        r = analyze.run_lesion(run_dirs, args.out, args.limit, args.samples, **data)
        for run in r["runs"]:
            single = [s["error"] for s in run["single"] if s["error"] is not None]
            print(
                f"{run['label']}: test error {run['baseline']:.1%}; deleting one block: "
                + (
                    f"median {sorted(single)[len(single) // 2]:.1%}, worst {max(single):.1%}"
                    if single
                    else "no block can be deleted"
                )
            )
    elif name == "gradients":
        r = analyze.run_gradients(run_dirs, args.out, args.depths, args.images, args.points, **data, lines=args.lines)
        for row in r["shattering"]["rows"]:
            print(
                f"{row['arch']}-{row['depth']} at init: neighbouring-gradient correlation {row['correlation']:.3f} "
                f"± {row['correlation_std']:.3f} over {len(row['values'])} lines"
            )
    elif name == "landscape":
        r = analyze.run_landscape(run_dirs, args.out, args.resolution, args.span, args.images, args.precision, **data)
        for run in r["runs"]:
            print(
                f"{run['label']}: loss at the centre {run['grid'][len(run['axis']) // 2][len(run['axis']) // 2]:.3f},"
                f" {run['local_minima']} local {'minimum' if run['local_minima'] == 1 else 'minima'} on the "
                f"{args.resolution}x{args.resolution} grid"
            )
    print(f"results in {analyze.output_dir(run_dirs, args.out) / 'analyses'}; run `reslab report` to include them")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.version:
        from reslab import __version__

        print(f"reslab {__version__}")
        return 0
    if not args.command:
        parser.print_help()
        return 0
    try:
        return COMMANDS[args.command](args)
    except UserError as e:
        from reslab.distributed import RelayedError, env_rank

        if not isinstance(e, RelayedError):  # rank 0 has said it already
            rank = env_rank()
            print(f"reslab{f' (rank {rank})' if rank else ''}: error: {e}", file=sys.stderr)
        return 2
    except ExperimentInterrupted as e:
        print(f"\nreslab: {e}", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print(
            "reslab: interrupted. Nothing written so far is lost: run the same command again (a training run "
            "with --resume) to continue.",
            file=sys.stderr,
        )
        return 130


def config_from_args(args, **overrides):
    """A TrainConfig from the parsed options that share its field names."""
    from dataclasses import fields

    from reslab.train import TrainConfig

    given = {f.name: getattr(args, f.name) for f in fields(TrainConfig) if hasattr(args, f.name)}
    return TrainConfig(**{**given, **overrides})


def cmd_train(args) -> int:
    from reslab.distributed import env_rank
    from reslab.train import Diverged, Interrupted, train

    if args.config:
        from reslab.runs import read_json
        from reslab.train import TrainConfig

        # Where data is kept is this machine's business: never taken from a (possibly foreign) file.
        found = read_json(Path(args.config))
        section = found.get("train") if isinstance(found, dict) else None
        if not isinstance(section, dict):
            raise UserError(f"--config {args.config} is not a reslab config.json (it has no 'train' section).")
        given = {k: v for k, v in section.items() if k not in ("data_dir", "download")}
        cfg = TrainConfig.from_dict({**given, "data_dir": args.data_dir, "download": args.download})
    else:
        cfg = config_from_args(args)
    main = env_rank() == 0  # under torchrun, rank 0 speaks for all
    try:
        row = train(cfg, args.out, resume=args.resume, progress=False if args.no_progress else None)
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


def split_archs(text: str) -> list[str]:
    from reslab.models import ARCHS

    archs = [a.strip() for a in text.split(",") if a.strip()]
    bad = [a for a in archs if a not in ARCHS]
    if bad or not archs:
        raise UserError(f"unknown architecture '{', '.join(bad)}': choose from {', '.join(ARCHS)}.")
    return archs


def mark(holds: bool | None) -> str:
    return {True: "yes", False: "NO", None: "?"}[holds]


def run_grid(out: Path, base, archs, depths, seeds, jobs, spec, **backend) -> list[dict]:
    """Train the grid, print the table and verdicts; returns the cells' outcomes."""
    from reslab.experiment import gather, grid, run_experiment, summarize, summary_table
    from reslab.verdicts import degradation_verdicts

    cells = grid(base, archs, depths, list(range(seeds)))
    print(
        f"training {len(cells)} network{'s' if len(cells) != 1 else ''} into {out}: {', '.join(archs)} x depths "
        f"{', '.join(map(str, depths))} x {seeds} seed(s) on {base.dataset}"
    )
    outcomes = run_experiment(out, cells, jobs=jobs, spec=spec, **backend)
    together, skipped = gather(out)
    for name, why in skipped:
        print(f"left out of the summary: {name}: {why}")
    summary = summarize(out, all_runs=together)
    print()
    print(summary_table(summary))
    print()
    for v in degradation_verdicts(summary, together):
        print(f"[{mark(v.holds)}] {v.claim}: {v.text}")
    return outcomes


def finish(out: Path, outcomes: list[dict]) -> int:
    """Write the report and say which runs did not finish (exit status 1 if any)."""
    from reslab.report import write_report

    print(f"\nreport: {write_report(out)}")
    failed = [o for o in outcomes if o["state"] != "finished"]
    if failed:
        names = ", ".join(f"{o['name']} ({o['state']})" for o in failed)
        print(f"{len(failed)} run(s) did not finish: {names}", file=sys.stderr)
        return 1
    return 0


def demo_analyses(out: Path, archs: list[str], depths: list[int]) -> None:
    """The why, in seconds: layer responses of every net, and the constructed solution from the
    shallowest to the deepest net of each architecture, compared with SGD's."""
    from reslab import analyze, runs
    from reslab.analysis.construct import outputs_text

    finished = [
        d
        for d in runs.find_runs(out)
        if runs.read_status(d)["state"] == "finished" and (d / "model.safetensors").exists()
    ]
    if not finished:
        return
    r = analyze.run_responses(finished, out)
    for f in r["findings"]:
        print(f"[{mark(f['holds'])}] {f['claim']}: {f['text']}")
    lo, hi = min(depths), max(depths)
    for arch in archs:
        source = out / f"{arch}-{lo}-seed0"
        if hi > lo and source in finished:
            c = analyze.run_construct(source, hi, out)
            scratch = f"; SGD from scratch reached {c['scratch_train_error']:.1%}" if "scratch" in c else ""
            print(
                f"constructed {arch}-{hi} from {arch}-{lo}: {outputs_text(c)}, "
                f"training error {c['constructed_train_error']:.1%}{scratch} (in eval mode on the training "
                "images; the table's training error is the running error of the last epoch's batches)"
            )


def cmd_demo(args) -> int:
    import time

    from reslab.train import resolve_device

    on_cpu = resolve_device(args.device).type == "cpu"
    digits = args.dataset == "digits"
    subset = args.subset or (None if digits or not on_cpu else 5000)
    epochs = args.epochs or (30 if digits else 15)
    # The paper's warm-up (lr 0.01 until training error < 80%) for every net, plain and residual
    # alike: a demo run has few iterations per epoch, and a 56-layer net started at lr 0.1 can
    # blow up in its first steps on some seeds.
    base = config_from_args(args, subset=subset, epochs=epochs, warmup="on")
    t0 = time.perf_counter()
    spec = {"kind": "demo", "dataset": args.dataset, "epochs": epochs, "subset": subset}
    out, archs = Path(args.out), split_archs(args.archs)
    outcomes = run_grid(out, base, archs, args.depths, args.seeds, args.jobs, spec, overwrite=args.overwrite)
    demo_analyses(out, archs, args.depths)
    code = finish(out, outcomes)
    print(f"demo finished in {time.perf_counter() - t0:.0f} s")
    return code


def cmd_experiment(args) -> int:
    base = config_from_args(args)
    spec = {"kind": args.kind, "archs": args.archs, "depths": args.depths, "seeds": args.seeds}
    out = Path(args.out)
    backend = dict(
        backend=args.backend,
        address=args.address,
        runs_per_gpu=args.runs_per_gpu,
        cpus_per_run=args.cpus_per_run,
        retries=args.retries,
        overwrite=args.overwrite,
    )
    return finish(
        out, run_grid(out, base, split_archs(args.archs), args.depths, args.seeds, args.jobs, spec, **backend)
    )


def cmd_report(args) -> int:
    from reslab.report import write_report

    path = Path(args.dir)
    if not path.is_dir():
        raise UserError(f"{path} is not a directory; give a demo or experiment directory (for example runs/demo).")
    print(f"report: {write_report(path)}")
    return 0


def cmd_eval(args) -> int:
    from reslab.evaluate import evaluate_run

    result = evaluate_run(
        Path(args.run_dir), dataset=args.dataset, data_dir=args.data_dir, download=args.download, device=args.device
    )
    print(
        f"{args.run_dir} on {result['dataset']} test set ({result['images']} images): "
        f"loss {result['loss']:.4f}, error {result['error']:.2%}, accuracy {1 - result['error']:.2%}"
    )
    return 0


def cmd_import(args) -> int:
    from reslab.pretrained import import_checkpoint

    config = import_checkpoint(Path(args.file), Path(args.out), args.mean, args.std, args.dataset)
    m = config["model"]
    extra = config["imported"].get("best_prec1")
    print(
        f"imported ResNet-{m['depth']} ({config['resolved']['parameters']:,} parameters) into {args.out}"
        + (f"; the file reports a best test accuracy of {extra:.2f}%" if isinstance(extra, float) else "")
    )
    print(f"score it with: reslab eval {args.out} --dataset {args.dataset}")
    return 0


def cmd_models(args) -> int:
    from reslab.models import ModelConfig, build_model, count_macs, count_parameters

    try:
        shape = tuple(int(v) for v in args.input.lower().split("x"))
        assert len(shape) == 3 and min(shape) > 0
    except (ValueError, AssertionError):
        raise UserError(f"--input '{args.input}' must look like 3x32x32 (channels x height x width).") from None
    print(f"{'architecture':<24}{'depth':>6}{'parameters':>13}{'MACs (M)':>11}")
    for arch, shortcut in (("plain", "A"), ("resnet", "A"), ("resnet", "B"), ("preact", "A")):
        for depth in args.depths:
            m = build_model(ModelConfig(arch, depth, shortcut, num_classes=args.classes, in_channels=shape[0]))
            name = arch if arch == "plain" else f"{arch} (option {shortcut})"
            print(f"{name:<24}{depth:>6}{count_parameters(m):>13,}{count_macs(m, shape) / 1e6:>11.2f}")
    m = build_model(ModelConfig("preact-bottleneck", 164, "B", num_classes=args.classes, in_channels=shape[0]))
    print(f"{'preact-bottleneck (B)':<24}{164:>6}{count_parameters(m):>13,}{count_macs(m, shape) / 1e6:>11.2f}")
    print("plain and resnet (option A) have the same parameters and MACs: the identity shortcuts are free.")
    return 0


def cmd_datasets(args) -> int:
    from reslab.data import describe_datasets

    found = describe_datasets(args.data_dir)
    width = max(len(name) for name, _ in found) + 2
    for name, where in found:
        print(f"{name:<{width}}{where}")
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


if __name__ == "__main__":
    sys.exit(main())
