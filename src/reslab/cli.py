"""Command line: argument parsing only; the work is done by the library's functions.

torch is imported inside the commands, so `reslab --help` stays fast.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from reslab.config import CHOICES, default
from reslab.errors import ExperimentInterrupted, UserError
from reslab.options import (
    DATA_DIR_HELP,
    DEVICE_HELP,
    NO_DOWNLOAD_HELP,
    float_list,
    int_list,
    non_negative_int,
    positive_int,
)
from reslab.presets import PRESETS

EPILOG = "Run 'reslab COMMAND --help' for a command's options. Start with: reslab demo"


def add_choice(p: argparse.ArgumentParser, name: str, help: str) -> None:
    """--NAME taking one of the training setting's choices, with its default."""
    help = help if "default" in help else f"{help}; default %(default)s"
    p.add_argument(f"--{name.replace('_', '-')}", choices=CHOICES[name], default=default(name), help=help)


def add_source_options(
    p: argparse.ArgumentParser,
    dataset: str = default("dataset"),
    dataset_help: str = "cifar10, cifar100, mnist, fashion-mnist, digits, synthetic or imagefolder:PATH "
    "(default %(default)s)",
) -> None:
    """Where the images come from: --dataset, --data-dir, --no-download."""
    p.add_argument("--dataset", default=dataset, help=dataset_help)
    p.add_argument("--data-dir", help=DATA_DIR_HELP)
    p.add_argument("--no-download", dest="download", action="store_false", help=NO_DOWNLOAD_HELP)


def add_data_options(p: argparse.ArgumentParser) -> None:
    add_source_options(p)
    p.add_argument("--subset", type=positive_int, help="train on a class-balanced subset of N training images")
    p.add_argument(
        "--image-size",
        type=positive_int,
        metavar="N",
        help="resize every image to NxN by area averaging (default: as stored; 32 for CIFAR)",
    )
    p.add_argument(
        "--test-subset",
        type=non_negative_int,
        metavar="N",
        help="evaluate on N class-balanced test images (default: in proportion to --subset, all without it; 0: all)",
    )
    p.add_argument(
        "--val-split",
        type=non_negative_int,
        default=default("val_split"),
        metavar="N",
        help="hold out N training images for validation (the paper used 5000); default %(default)s",
    )


def add_schedule_options(p: argparse.ArgumentParser) -> None:
    length = p.add_mutually_exclusive_group()
    length.add_argument("--iterations", type=positive_int, help="length of the run (default: the paper's 64000)")
    length.add_argument("--epochs", type=float, help="length of the run in epochs")
    length.add_argument("--scale", type=float, help="fraction of the paper's 64k iterations")
    p.add_argument("--batch-size", type=positive_int, default=default("batch_size"), help="default %(default)s")
    p.add_argument("--lr", type=float, default=default("lr"), help="default %(default)s")
    p.add_argument("--momentum", type=float, default=default("momentum"), help="default %(default)s")
    p.add_argument("--weight-decay", type=float, default=default("weight_decay"), help="default %(default)s")
    add_choice(
        p,
        "warmup",
        "lr --warmup-lr until training error < --warmup-error, then --lr (auto: on for depth >= 110, as in the "
        "paper); default %(default)s",
    )
    p.add_argument(
        "--warmup-lr", type=float, default=default("warmup_lr"), help="the warm-ups' starting lr (default %(default)s)"
    )
    p.add_argument(
        "--warmup-error",
        type=float,
        default=default("warmup_error"),
        help="--warmup ends once training error falls below this fraction (default %(default)s, the paper's 80%%)",
    )
    add_choice(
        p,
        "schedule",
        "step: lr / 10 at --milestones (paper); cosine: lr falls to 0 along a half cosine (default %(default)s)",
    )
    p.add_argument(
        "--milestones",
        type=float_list,
        default=default("milestones"),
        metavar="F,F",
        help="for the step schedule, the fractions of the run at which the lr drops tenfold (default 0.5,0.75: the "
        "paper's 32k and 48k of 64k)",
    )
    p.add_argument(
        "--linear-warmup",
        type=non_negative_int,
        default=default("linear_warmup"),
        metavar="N",
        help="raise the lr linearly from --warmup-lr to --lr over the first N iterations (default %(default)s: none)",
    )
    add_choice(
        p,
        "init",
        "conv weights: he (He et al. 2015, the paper's) or torch (PyTorch's default, about 1/6 of the squared "
        "norm); default %(default)s",
    )
    p.add_argument(
        "--block-gamma",
        type=float,
        default=default("block_gamma"),
        metavar="G",
        help="start every block's last BN with scale G, plain and residual alike: in a residual block it scales "
        "F(x) against the shortcut (default %(default)s: BN's own default, which the paper does not change)",
    )
    add_choice(
        p,
        "augment",
        "pad-crop-flip (auto: on for natural images, off for digits)",
    )
    p.add_argument("--eval-every", type=positive_int, help="iterations between evaluations (default: one epoch)")
    add_choice(
        p,
        "precision",
        "auto: bf16 autocast where the hardware runs it natively (CUDA, AVX-512 BF16), else fp32",
    )
    add_choice(
        p,
        "compile",
        "torch.compile the training step (auto: for runs of 4000 iterations or more)",
    )
    add_choice(
        p,
        "cuda_graphs",
        "record the whole training step as a CUDA graph per lr phase and replay it (auto: on a CUDA "
        "device, one process; several times faster for these small nets)",
    )
    p.add_argument("--device", default=default("device"), help=DEVICE_HELP)


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


def add_model_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--arch", default=default("arch"), help=LazyHelp(arch_help, "the architecture; default %(default)s"))
    p.add_argument(
        "--depth", type=int, default=default("depth"), help=LazyHelp(depth_help, "the depth; default %(default)s")
    )
    p.add_argument(
        "--shortcut",
        choices=CHOICES["shortcut"],
        help="A: zero-padding identity (default), B: projection where the shape changes, C: always",
    )
    p.add_argument(
        "--width", type=positive_int, default=default("width"), help="filters in the first stage (default %(default)s)"
    )


def add_tensorboard_option(p: argparse.ArgumentParser, where: str) -> None:
    p.add_argument(
        "--tensorboard",
        action="store_true",
        help=f"also write TensorBoard event files to {where} (needs: pip install 'reslab[tensorboard]')",
    )


def add_overwrite_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="delete the runs in --out that were trained with other settings and train them anew "
        "(without it, such a directory is refused)",
    )


class Parser(argparse.ArgumentParser):
    """reslab's parser, which keeps the subcommands' parsers whose typed options are looked up."""

    experiment_parser: argparse.ArgumentParser
    train_parser: argparse.ArgumentParser


def build_parser(argv: list[str] | None = None) -> Parser:
    parser = Parser(
        prog="reslab",
        description="A laboratory for residual networks "
        "(He et al. 2016): the degradation problem and its cure, measured.",
        epilog=EPILOG,
    )
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    add_demo(sub)
    parser.experiment_parser = add_experiment(sub)
    parser.train_parser = add_train(sub)
    add_report(sub)
    add_eval(sub)
    add_analyze_parsers(sub, full=argv is not None and "analyze" in argv)
    add_import(sub)
    add_models(sub)
    add_datasets(sub)
    return parser


def add_demo(sub) -> argparse.ArgumentParser:
    """`reslab demo`: the four-network comparison, sized for under a minute on a CPU."""
    from reslab.demo import EPOCHS  # imports no torch

    p = sub.add_parser(
        "demo",
        help="the degradation problem and its cure, in under a minute on a 2-core CPU (start here)",
        description="Train plain and residual nets of two depths, print the table and the verdicts "
        "computed from them, and write an experiment directory with report.html.",
    )
    add_source_options(p, "digits", "default digits (embedded, no download); also cifar10, imagefolder:PATH, ...")
    p.add_argument("--archs", default="plain,resnet", help="default %(default)s")
    p.add_argument("--depths", type=int_list, default=[20, 56], help="default 20,56")
    add_seed_options(p)
    p.add_argument("--epochs", type=float, help=f"default {EPOCHS}")
    p.add_argument(
        "--subset", type=positive_int, help="training images (default: all on digits, 5000 elsewhere on a CPU)"
    )
    p.add_argument("--jobs", type=positive_int, help="parallel training processes (default: one per core, one per GPU)")
    p.add_argument("--device", default=default("device"), help=DEVICE_HELP)
    p.add_argument("--out", default="runs/demo", help="experiment directory (default %(default)s)")
    add_overwrite_option(p)
    add_tensorboard_option(p, "each run's RUN/tensorboard, so that tensorboard --logdir OUT shows the whole grid live")
    return p


def add_seed_options(p) -> None:
    """--seeds and --seed, for the grids (demo and experiment)."""
    p.add_argument("--seeds", type=positive_int, default=1, help="number of seeds (from --seed on), default 1")
    p.add_argument(
        "--seed",
        type=non_negative_int,
        default=0,
        help="the first seed: --seed 3 trains seed 3 alone, --seed 3 --seeds 2 seeds 3 and 4 (default %(default)s)",
    )


def add_experiment(sub) -> argparse.ArgumentParser:
    """`reslab experiment`: a grid of runs on a backend, with the preset and the backend's options."""
    p = sub.add_parser(
        "experiment",
        help="a grid of runs: the paper's degradation experiment",
        description="Run every (architecture, depth, seed) cell as an ordinary run directory, "
        "skipping finished cells and resuming interrupted ones, then summarise, plot and "
        "report.",
    )
    p.add_argument(
        "kind",
        nargs="?",
        choices=["degradation"],
        default="degradation",
        help="the experiment (default %(default)s: Fig. 1, Fig. 6, Table 6)",
    )
    p.add_argument(
        "--preset",
        choices=sorted(PRESETS),
        help="a named recipe that fills in the options you do not give; cpu: "
        + PRESETS["cpu"].summary
        + " (its departures from the paper are listed in the report)",
    )
    p.add_argument("--archs", default="plain,resnet", help="default %(default)s")
    p.add_argument("--depths", type=int_list, default=[20, 32, 44, 56], help="default 20,32,44,56")
    add_seed_options(p)
    p.add_argument(
        "--shortcut",
        choices=CHOICES["shortcut"],
        help="A: zero-padding identity (default), B: projection where the shape changes, C: always",
    )
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
    p.add_argument(
        "--share-gpu",
        choices=["processes", "streams"],
        default="processes",
        help="local backend: how --runs-per-gpu networks share a GPU: as processes (default, measured), or as "
        "threads of one process, each on its own CUDA stream with its step as CUDA graphs (not yet measured)",
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
    add_tensorboard_option(p, "each run's RUN/tensorboard, so that tensorboard --logdir OUT shows the whole grid live")
    return p


def add_train(sub) -> argparse.ArgumentParser:
    """`reslab train`: one network into a run directory."""
    p = sub.add_parser("train", help="train one network into a run directory")
    add_model_options(p)
    add_data_options(p)
    add_schedule_options(p)
    p.add_argument("--seed", type=non_negative_int, default=default("seed"), help="default %(default)s")
    p.add_argument("--out", required=True, help="run directory to write")
    p.add_argument(
        "--config",
        help="rebuild a run from its config.json: its training configuration replaces the defaults of the "
        "options above; any of them given on the command line overrides the file",
    )
    p.add_argument("--resume", action="store_true", help="continue the interrupted run in --out exactly")
    p.add_argument("--no-progress", action="store_true", help="one line per evaluation instead of a progress bar")
    p.add_argument(
        "--init-from",
        help="start from these weights (a model.safetensors, for example of a constructed net) instead of He init",
    )
    add_tensorboard_option(p, "OUT/tensorboard")
    p.add_argument(
        "--sync-bn",
        action="store_true",
        help="under torchrun: BatchNorm statistics over the whole global batch (default: per process, as in the paper)",
    )
    return p


def add_report(sub) -> argparse.ArgumentParser:
    """`reslab report DIR`."""
    p = sub.add_parser("report", help="write the self-contained HTML report of a demo or experiment directory")
    p.add_argument("dir", help="a demo or experiment directory, or a run directory")
    return p


def add_eval(sub) -> argparse.ArgumentParser:
    """`reslab eval RUN`."""
    p = sub.add_parser("eval", help="test loss and error of a run's final weights")
    p.add_argument("run_dir", help="a run directory (with model.safetensors)")
    p.add_argument("--dataset", help="evaluate on another dataset (default: the run's own)")
    p.add_argument("--data-dir", help=DATA_DIR_HELP)
    p.add_argument("--no-download", dest="download", action="store_false", help=NO_DOWNLOAD_HELP)
    p.add_argument("--device", default=default("device"), help=DEVICE_HELP)
    return p


def add_import(sub) -> argparse.ArgumentParser:
    """`reslab import FILE|NAME`."""
    p = sub.add_parser(
        "import",
        help="turn a pretrained CIFAR ResNet checkpoint into a run directory",
        description="Read a checkpoint in the common PyTorch CIFAR ResNet layout ({'state_dict': ...} "
        "with module. prefixes, option-A shortcuts) safely (weights_only) and write a "
        "run directory that every analysis and `reslab eval` can use.",
    )
    p.add_argument(
        "file",
        help="the checkpoint file (.th, .pt or .pth), or the name resnet20, resnet32, resnet44 or resnet56: "
        "akamaster/pytorch_resnet_cifar10's pretrained CIFAR-10 ResNet, downloaded once and sha256-checked",
    )
    p.add_argument("--out", required=True, help="run directory to write")
    p.add_argument(
        "--mean",
        type=float_list,
        help="input normalisation the checkpoint was trained with (default: ImageNet's 0.485,0.456,0.406)",
    )
    p.add_argument("--std", type=float_list, help="default: ImageNet's 0.229,0.224,0.225")
    p.add_argument("--dataset", default="cifar10", help="the dataset it was trained on (default %(default)s)")
    return p


def add_models(sub) -> argparse.ArgumentParser:
    """`reslab models`: parameters and MACs from the registry."""
    p = sub.add_parser("models", help="table of architectures with depth, parameters and MACs")
    p.add_argument("--depths", type=int_list, default=[20, 32, 44, 56, 110], help="default 20,32,44,56,110")
    p.add_argument("--input", default="3x32x32", help="CxHxW of the input (default 3x32x32)")
    p.add_argument("--classes", type=positive_int, default=10, help="classes of the output (default %(default)s)")
    return p


def add_datasets(sub) -> argparse.ArgumentParser:
    """`reslab datasets`."""
    p = sub.add_parser("datasets", help="which datasets are available offline, and where")
    p.add_argument("--data-dir", help=DATA_DIR_HELP)
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


def cmd_analyze(args) -> int:
    from reslab.analysis import load

    m = load(args.analysis)
    result, out = m.command(args)
    for line in m.summary(result):
        print(line)
    print(f"results in {out / 'analyses'}; run `reslab report {out}` to include them")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    if args.version:
        from reslab._version import __version__

        print(f"reslab {__version__}")
        return 0
    if not args.command:
        parser.print_help()
        return 0
    if args.command == "experiment":
        apply_preset(args, typed_options(parser.experiment_parser, argv))
    if args.command == "train":
        args.typed = typed_options(parser.train_parser, argv)
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

    from reslab.config import TrainConfig

    given = {f.name: getattr(args, f.name) for f in fields(TrainConfig) if hasattr(args, f.name)}
    return TrainConfig(**{**given, **overrides})


def cmd_train(args) -> int:
    from reslab.distributed import env_rank
    from reslab.train import Diverged, Interrupted, train

    if args.config:
        from dataclasses import fields

        from reslab.config import TrainConfig
        from reslab.runs import train_config_of

        names = {f.name for f in fields(TrainConfig)}
        typed = {k: getattr(args, k) for k in getattr(args, "typed", set()) if k in names}
        cfg = train_config_of(Path(args.config), typed, args.data_dir, args.download)
        if typed:
            flags = ", ".join("--" + k.replace("_", "-") for k in sorted(typed))
            print(f"training the run of --config {args.config}, with {flags} as given on the command line")
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


def cmd_demo(args) -> int:
    from reslab.demo import demo
    from reslab.experiment import LocalBackend

    return demo(
        config_from_args(args),
        Path(args.out),
        args.archs,
        args.depths,
        args.seeds,
        LocalBackend(args.jobs),
        overwrite=args.overwrite,
        first_seed=args.seed,
    )


def apply_preset(args, typed: set[str]) -> None:
    """Fill in the preset's settings (if one is asked for) for every option the user did not type."""
    if not args.preset:
        return
    preset = PRESETS[args.preset]
    values = {"depths": preset.depths, "seeds": preset.seeds, **preset.train}
    if typed & {"epochs", "scale"}:
        values.pop("iterations", None)  # the user chose the length another way
    for name, value in values.items():
        if name not in typed:
            setattr(args, name, value)


def typed_options(parser: argparse.ArgumentParser, argv: list[str]) -> set[str]:
    """The destinations of the options that appear on the command line."""
    actions = parser._option_string_actions
    return {actions[t.split("=")[0]].dest for t in argv if t.startswith("--") and t.split("=")[0] in actions}


def cmd_experiment(args) -> int:
    from reslab.experiment import finish, run_grid, split_archs

    base = config_from_args(args)
    spec = {"kind": args.kind, "archs": args.archs, "depths": args.depths, "seeds": args.seeds}
    if args.preset:
        spec["preset"] = args.preset
        preset = PRESETS[args.preset]
        print(f"preset {preset.name}: {preset.summary}; departures from the paper:")
        for d in preset.in_force(vars(args)):
            print(f"  {d.setting}: {d.preset} (paper: {d.paper})")
    out = Path(args.out)
    cells = (split_archs(args.archs), args.depths, list(range(args.seed, args.seed + args.seeds)))
    return finish(out, run_grid(out, base, *cells, spec, make_backend(args), args.overwrite))


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

    result = evaluate_run(
        Path(args.run_dir), dataset=args.dataset, data_dir=args.data_dir, download=args.download, device=args.device
    )
    print(
        f"{args.run_dir} on {result['dataset']} test set ({result['images']} images): "
        f"loss {result['loss']:.4f}, error {result['error']:.2%}, accuracy {1 - result['error']:.2%}"
    )
    return 0


def cmd_import(args) -> int:
    from reslab.pretrained import NAMED, fetch_named, import_checkpoint

    path = Path(args.file)
    if args.file in NAMED and not path.exists():
        path = fetch_named(args.file)
    config = import_checkpoint(path, Path(args.out), args.mean, args.std, args.dataset)
    extra = (config.imported or {}).get("best_prec1")
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
    print(f"{'architecture':<{width}}{'depth':>6}{'parameters':>13}{'MACs (M)':>11}")
    for name, depth, params, macs in rows:
        print(f"{name:<{width}}{depth:>6}{params:>13,}{macs / 1e6:>11.2f}")
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
