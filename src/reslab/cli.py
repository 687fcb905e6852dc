"""Command line: the parsers and the commands' edges; the work is done by the library's functions.

The training settings' options are generated from their fields (config.py, options.py) and
layered by settings.py. torch is imported inside the commands, so `reslab --help` stays fast.
"""

from __future__ import annotations

import argparse
import sys

from reslab import options, settings
from reslab.config import SETTINGS
from reslab.errors import ExperimentInterrupted, UserError
from reslab.options import add_settings, float_list, int_list, non_negative_int, option_kwargs, positive_int
from reslab.presets import PRESETS

EPILOG = "Run 'reslab COMMAND --help' for a command's options. Start with: reslab demo"
# The settings each grid command takes (the grid's own keys have their own options).
EXPERIMENT = [n for n in SETTINGS if n not in ("arch", "depth", "seed", "init_from", "sync_bn")]
DEMO = ["dataset", "subset", "epochs", "device", "data_dir", "download", "tensorboard"]
TB_GRID = "each run's RUN/tensorboard, so that tensorboard --logdir OUT shows the whole grid live"


class Parser(argparse.ArgumentParser):
    """reslab's parser, which keeps its commands' parsers: settings are layered on them."""

    commands: dict[str, argparse.ArgumentParser]


def build_parser(argv: list[str] | None = None) -> Parser:
    parser = Parser(
        prog="reslab",
        description="A laboratory for residual networks (He et al. 2016): the degradation problem and its cure, "
        "measured.",
        epilog=EPILOG,
    )
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    parser.commands = {
        "demo": add_demo(sub),
        "experiment": add_experiment(sub),
        "train": add_train(sub),
        "report": add_report(sub),
        "eval": add_eval(sub),
        "import": add_import(sub),
        "models": add_models(sub),
        "datasets": add_datasets(sub),
    }
    add_analyze_parsers(sub, full=argv is not None and "analyze" in argv)
    for command in parser.commands.values():
        add_output_options(command)
    return parser


def add_output_options(p: argparse.ArgumentParser) -> None:
    """--quiet and --verbose: how much a command says (reslab.log)."""
    out = p.add_mutually_exclusive_group()
    out.add_argument("--quiet", "-q", action="store_true", help="say only where the results are, and what went wrong")
    out.add_argument("--verbose", "-v", action="store_true", help="say more: debugging lines too")


def add_print_config(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--config",
        metavar="FILE",
        help="take settings from FILE: a YAML file as --print-config prints, or a run's config.json (its training "
        "settings); options typed beside it win",
    )
    p.add_argument("--print-config", action="store_true", help="print the resolved settings as YAML and exit")


def add_grid_options(p: argparse.ArgumentParser, depths: list[int], out: str) -> None:
    """--archs, --depths, --seeds, --seed, --out, --overwrite: a grid of cells."""
    p.add_argument("--archs", default="plain,resnet", help="default %(default)s")
    p.add_argument("--depths", type=int_list, default=depths, help=f"default {','.join(map(str, depths))}")
    p.add_argument("--seeds", type=positive_int, default=1, help="number of seeds (from --seed on), default 1")
    p.add_argument(
        "--seed",
        type=non_negative_int,
        default=0,
        help="the first seed: --seed 3 trains seed 3 alone, --seed 3 --seeds 2 seeds 3 and 4 (default %(default)s)",
    )
    p.add_argument("--out", default=out, help="experiment directory (default %(default)s)")
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="delete the runs in --out that were trained with other settings and train them anew, and replace "
        "files there that reslab did not write (without it, both are refused)",
    )
    p.add_argument(
        "--jobs",
        type=positive_int,
        help="parallel training processes (default: one per core on a CPU, --runs-per-gpu per GPU)",
    )
    add_print_config(p)


def add_demo(sub) -> argparse.ArgumentParser:
    """`reslab demo`: the four-network comparison, sized for under a minute on a CPU."""
    from reslab.demo import EPOCHS  # imports no torch

    p = sub.add_parser(
        "demo",
        help="the degradation problem and its cure, in under a minute on a 2-core CPU (start here)",
        description="Train plain and residual nets of two depths, print the table and the verdicts computed from "
        "them, and write an experiment directory with report.html.",
    )
    add_grid_options(p, [20, 56], "runs/demo")
    add_settings(p, DEMO, tensorboard=f"also write TensorBoard event files to {TB_GRID}")
    p.set_defaults(dataset="digits")
    for name, text in {
        "dataset": "digits (embedded, no download; the default); also cifar10, imagefolder:PATH, ...",
        "epochs": f"default {EPOCHS}",
        "subset": "training images (default: all on digits, 5000 elsewhere on a CPU)",
    }.items():
        next(a for a in p._actions if a.dest == name).help = text
    return p


def add_experiment(sub) -> argparse.ArgumentParser:
    """`reslab experiment`: a grid of runs on a backend."""
    p = sub.add_parser(
        "experiment",
        help="a grid of runs: the paper's degradation experiment",
        description="Run every (architecture, depth, seed) cell as an ordinary run directory, skipping finished "
        "cells and resuming interrupted ones, then summarise, plot and report.",
    )
    p.add_argument(
        "kind",
        nargs="?",
        choices=["degradation", "init"],
        default="degradation",
        help="degradation (the default): the paper's Fig. 1, Fig. 6, Table 6; init: the same grid at several initial "
        "scales of every block's last BN (--scales), and how near the identity each residual block starts and ends "
        "(docs/init.md)",
    )
    p.add_argument(
        "--scales",
        type=float_list,
        metavar="G,G",
        help="init: the initial scales of every block's last BN (default 1,0.3,0.1,0)",
    )
    p.add_argument(
        "--preset",
        choices=sorted(PRESETS),
        help=f"a named recipe under the options you give; cpu: {PRESETS['cpu'].summary} (its departures "
        "from the paper are listed in the report)",
    )
    add_grid_options(p, [20, 32, 44, 56], "runs/degradation")
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue the experiment in --out with the settings it was started with (no other flag needed)",
    )
    add_settings(p, EXPERIMENT, tensorboard=f"also write TensorBoard event files to {TB_GRID}")
    add_backend_options(p)
    return p


def add_backend_options(p: argparse.ArgumentParser) -> None:
    """Where an experiment's cells train: local processes or a Ray cluster."""
    backend = p.add_argument_group("the backend")
    backend.add_argument(
        "--backend",
        choices=["local", "ray"],
        default="local",
        help="local: processes on this machine (default); ray: one Ray task per run, on a cluster "
        "(needs: pip install 'reslab[ray]')",
    )
    backend.add_argument(
        "--address",
        help="ray backend: the cluster to join (auto, HOST:6379 or ray://HOST:10001; default: start Ray here)",
    )
    backend.add_argument(
        "--runs-per-gpu",
        type=positive_int,
        default=1,
        help="networks trained at once on one GPU (each run asks for 1/N of a GPU); default 1",
    )
    backend.add_argument(
        "--share-gpu",
        choices=["processes", "streams"],
        default="processes",
        help="local backend: how --runs-per-gpu networks share a GPU: as processes (default, "
        "measured), or as threads of one process, each on its own CUDA stream (not yet measured)",
    )
    backend.add_argument("--cpus-per-run", type=positive_int, help="ray backend: CPUs each run asks for (default 1)")
    backend.add_argument(
        "--retries",
        type=non_negative_int,
        default=3,
        help="ray backend: times a run whose worker died is restarted from its checkpoint (default 3)",
    )


def add_train(sub) -> argparse.ArgumentParser:
    """`reslab train`: one network into a run directory."""
    p = sub.add_parser("train", help="train one network into a run directory")
    p.add_argument("--out", help="run directory to write")
    p.add_argument(
        "--resume",
        nargs="?",
        const=True,
        metavar="DIR",
        help="continue the interrupted run in DIR (or --out) exactly, with the settings in its "
        "config.json (no other flag needed)",
    )
    p.add_argument("--no-progress", action="store_true", help="one line per evaluation instead of a progress bar")
    options.add_overwrite(p)
    add_print_config(p)
    add_settings(p, SETTINGS)
    return p


def add_report(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("report", help="write the self-contained HTML report of a demo or experiment directory")
    p.add_argument("dir", help="a demo or experiment directory, or a run directory")
    options.add_overwrite(p)
    return p


def add_eval(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("eval", help="test loss and error of a run's final weights")
    p.add_argument("run_dir", help="a run directory (with model.safetensors)")
    p.add_argument("--dataset", help="evaluate on another dataset (default: the run's own)")
    p.add_argument(
        "--precision",
        choices=["run", "fp32", "bf16"],
        default="run",
        help="run: the precision the run evaluated in while it trained, so the error is the run's own "
        "(default); fp32 or bf16 to choose",
    )
    for name in ("device", "data_dir", "download"):
        p.add_argument(
            SETTINGS[name].metadata.get("flag") or f"--{name.replace('_', '-')}", dest=name, **option_kwargs(name)
        )
    return p


def add_import(sub) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "import",
        help="turn a pretrained CIFAR ResNet checkpoint into a run directory",
        description="Read a checkpoint in the common PyTorch CIFAR ResNet layout ({'state_dict': ...} with module. "
        "prefixes, option-A shortcuts) safely (weights_only) and write a run directory that every analysis and "
        "`reslab eval` can use.",
    )
    p.add_argument(
        "file",
        help="the checkpoint file (.th, .pt or .pth), or the name resnet20, resnet32, resnet44 or "
        "resnet56: akamaster/pytorch_resnet_cifar10's pretrained CIFAR-10 ResNet, downloaded once and "
        "sha256-checked",
    )
    p.add_argument("--out", required=True, help="run directory to write")
    options.add_overwrite(p)
    p.add_argument(
        "--mean",
        type=float_list,
        help="input normalisation the checkpoint was trained with (default: ImageNet's 0.485,0.456,0.406)",
    )
    p.add_argument("--std", type=float_list, help="default: ImageNet's 0.229,0.224,0.225")
    p.add_argument("--dataset", default="cifar10", help="the dataset it was trained on (default %(default)s)")
    return p


def add_models(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("models", help="table of architectures with depth, parameters and MACs")
    p.add_argument("--depths", type=int_list, default=[20, 32, 44, 56, 110], help="default 20,32,44,56,110")
    p.add_argument("--input", default="3x32x32", help="CxHxW of the input (default 3x32x32)")
    p.add_argument("--classes", type=positive_int, default=10, help="classes of the output (default %(default)s)")
    return p


def add_datasets(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("datasets", help="which datasets are available offline, and where")
    p.add_argument("--data-dir", help=SETTINGS["data_dir"].metadata["help"])
    return p


def add_analyze_parsers(sub, full: bool) -> None:
    """`reslab analyze NAME`: each analysis module brings its options (analysis/__init__.py lists
    them). Only a command line that asks for an analysis imports them, since they bring torch."""
    from reslab.analysis import NAMES

    p = sub.add_parser("analyze", help=f"why residual learning works: {', '.join(NAMES)}")
    asub = p.add_subparsers(dest="analysis", metavar="ANALYSIS", required=True)
    if not full:
        for name in NAMES:
            asub.add_parser(name)
        return
    from reslab.analysis import load

    for name in NAMES:
        m = load(name)
        timing = " On a terminal a progress bar shows how far it is and how long it will take." if m.SLOW else ""
        a = asub.add_parser(name, help=m.HELP.split(":")[0].split(";")[0], description=m.HELP + "." + timing)
        m.add_args(a)
        options.add_overwrite(a)
        add_output_options(a)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser(argv)
    try:
        try:
            args = parser.parse_args(argv)
            if args.command in parser.commands:
                args = settings.parse(parser, parser.commands[args.command], argv)
        except SystemExit as e:  # argparse has said what is wrong (or shown the help)
            return e.code if isinstance(e.code, int) else 2
        if args.version:
            from reslab._version import __version__

            print(f"reslab {__version__}")
            return 0
        if not args.command:
            parser.print_help()
            return 0
        if getattr(args, "print_config", False):
            print(settings.as_yaml(args, parser.commands[args.command]), end="")
            return 0
        from reslab import commands, files, limits, log

        log.configure(getattr(args, "quiet", False), getattr(args, "verbose", False))
        with limits.as_sentences(), files.overwriting(getattr(args, "overwrite", False)):
            return commands.COMMANDS[args.command](args)
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


if __name__ == "__main__":
    sys.exit(main())
