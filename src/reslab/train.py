"""The training loop: the paper's recipe, metrics, atomic checkpoints and exact resume.

Recipe (paper, section 4.2): SGD with momentum 0.9, weight decay 1e-4, mini-batch 128, lr 0.1
divided by 10 at 32k and 48k iterations, stop at 64k. Shorter runs keep the drops at 50% and
75% of the run. Deep nets (>= 110 layers) warm up at lr 0.01 until the training error is below
80%, then go back to 0.1.

Training error is the running error of the mini-batches since the previous evaluation (train
mode, augmented), the quantity the paper's thin dashed curves show; test and validation errors
are measured in eval mode on the whole split.
"""

from __future__ import annotations

import contextlib
import math
import platform
import re
import signal
import sys
import time
import warnings
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import torch
import torch.nn.functional as F

from reslab import __version__, accel, distributed, runs
from reslab.augment import default_pad, pad_crop_flip
from reslab.data import Dataset, load_dataset, prepare
from reslab.errors import UserError, one_line
from reslab.models import (
    ARCHS,
    ModelConfig,
    blocks_per_stage,
    build_model,
    check_size,
    count_macs,
    count_parameters,
    state_mismatch,
)
from reslab.signals import STOP_SIGNALS, Catching

PAPER_ITERATIONS = 64_000
WARMUP_WINDOW = 20  # iterations over which the warm-up's training error is measured
STOP_VOTE_EVERY = 10  # under torchrun, iterations between the ranks' votes on a stop request


@dataclass
class TrainConfig:
    arch: str = "resnet"
    depth: int = 20
    shortcut: str | None = None  # None: A (the paper's CIFAR choice); B for preact-bottleneck
    width: int = 16
    dataset: str = "cifar10"
    data_dir: str | None = None
    download: bool = True
    subset: int | None = None
    test_subset: int | None = None  # None: in proportion to subset (all without one); 0: all
    val_split: int = 0
    batch_size: int = 128
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 1e-4
    iterations: int | None = None  # at most one of iterations / epochs / scale; default 64k
    epochs: float | None = None
    scale: float | None = None
    milestones: list[float] = field(default_factory=lambda: [0.5, 0.75])
    warmup: str = "auto"  # auto: on for depth >= 110 (paper); on; off
    warmup_lr: float = 0.01
    warmup_error: float = 0.8
    augment: str = "auto"  # auto: crop+flip on natural images, none on digits; on; off
    eval_every: int | None = None  # iterations between evaluations; default one epoch
    seed: int = 0
    precision: str = "auto"  # auto: bf16 autocast where the hardware runs it natively; fp32; bf16
    device: str = "auto"
    channels_last: bool = True
    compile: str = "auto"  # torch.compile the training step; auto: runs of >= 4000 iterations (accel.py)
    tensorboard: bool = False  # also write TensorBoard event files to RUN/tensorboard
    init_from: str | None = None  # start from these weights (a model.safetensors) instead of He init
    sync_bn: bool = False  # under torchrun: BatchNorm statistics over the global batch, not per rank

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        names = {f.name for f in fields(cls)}
        unknown = set(d) - names
        if unknown or not d:
            raise UserError(f"not a reslab training configuration (unknown keys: {', '.join(sorted(unknown)) or '-'}).")
        return cls(**d)

    def check_types(self) -> None:
        """Every field of the type it must have (a config.json may come from anyone)."""
        kinds = {
            "str": str, "int": int, "float": (int, float), "bool": bool, "list[float]": list,
            "str | None": (str, type(None)), "int | None": (int, type(None)), "float | None": (int, float, type(None)),
        }  # fmt: skip
        for f in fields(self):
            v = getattr(self, f.name)
            ok = isinstance(v, kinds[f.type]) and not (isinstance(v, bool) and f.type != "bool")
            if f.type == "list[float]":
                ok = ok and all(isinstance(m, (int, float)) and not isinstance(m, bool) for m in v)
            if not ok:
                raise UserError(f"the training setting {f.name} must be {f.type.replace('|', 'or')}, got {v!r}.")

    def model_config(self, num_classes: int, in_channels: int) -> ModelConfig:
        shortcut = self.shortcut or ("B" if self.arch == "preact-bottleneck" else "A")
        return ModelConfig(self.arch, self.depth, shortcut, self.width, num_classes, in_channels)

    def validate(self) -> None:
        self.check_types()
        if self.arch not in ARCHS:
            raise UserError(f"unknown architecture '{self.arch}': choose one of {', '.join(ARCHS)}.")
        blocks_per_stage(self.arch, self.depth)
        if sum(v is not None for v in (self.iterations, self.epochs, self.scale)) > 1:
            raise UserError("give at most one of --iterations, --epochs and --scale.")
        for name in ("iterations", "epochs", "scale", "batch_size", "lr", "warmup_lr", "width"):
            v = getattr(self, name)
            if v is not None and not (v > 0 and math.isfinite(v)):
                raise UserError(f"--{name.replace('_', '-')} must be a positive finite number, got {v}.")
        for name in ("momentum", "weight_decay"):
            v = getattr(self, name)
            if not (0 <= v < (1 if name == "momentum" else math.inf)):
                limits = "from 0 to below 1" if name == "momentum" else "0 or more and finite"
                raise UserError(f"--{name.replace('_', '-')} must be {limits}, got {v}.")
        if not 0 <= self.seed < 2**63:
            raise UserError(f"--seed must be a whole number from 0 to 2**63-1, got {self.seed}.")
        if not 0 < self.warmup_error <= 1 or not all(0 < m <= 1 for m in self.milestones):
            raise UserError("warmup_error and the milestones are fractions between 0 and 1.")
        if self.test_subset is not None and self.test_subset < 0:
            raise UserError(f"--test-subset must be 0 (all) or more, got {self.test_subset}.")
        if self.val_split < 0:
            raise UserError(f"--val-split must be 0 or more, got {self.val_split}.")
        if self.shortcut not in (None, "A", "B", "C"):
            raise UserError(f"--shortcut takes A, B or C, got '{self.shortcut}'.")
        check_size(ModelConfig(self.arch, self.depth, self.shortcut or "A", self.width))
        if self.warmup not in ("auto", "on", "off") or self.augment not in ("auto", "on", "off"):
            raise UserError("--warmup and --augment take auto, on or off.")
        if self.compile not in ("auto", "on", "off"):
            raise UserError(f"--compile takes auto, on or off, got '{self.compile}'.")
        if self.precision not in ("auto", "fp32", "bf16"):
            raise UserError(f"unknown precision '{self.precision}': choose auto, fp32 or bf16.")


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise UserError(f"unknown device '{name}': use auto, cpu or cuda[:N].") from None
    if dev.type not in ("cpu", "cuda"):
        raise UserError(f"reslab trains on cpu or cuda[:N], not on '{name}'.")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda was asked for, but this PyTorch sees no GPU; use --device cpu.")
    if dev.type == "cuda" and (dev.index or 0) >= torch.cuda.device_count():
        raise UserError(f"--device {name}: this machine has {torch.cuda.device_count()} GPU(s), numbered from 0.")
    return dev


def resolve_precision(name: str, device: torch.device) -> str:
    if name != "auto":
        return name
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    # bf16 autocast only pays on CPUs with native bf16 dot products (AVX-512 BF16, AMX).
    return "bf16" if torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported() else "fp32"


def autocast(device: torch.device, precision: str):
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")


def total_iterations(cfg: TrainConfig, steps_per_epoch: int) -> int:
    if cfg.iterations is not None:
        return int(cfg.iterations)
    if cfg.epochs is not None:
        return max(1, round(cfg.epochs * steps_per_epoch))
    return max(1, round(PAPER_ITERATIONS * (cfg.scale if cfg.scale is not None else 1.0)))


def lr_at(iteration: int, base_lr: float, milestones: list[int]) -> float:
    """Step schedule: base lr divided by 10 at each milestone passed."""
    return base_lr * 0.1 ** sum(iteration >= m for m in milestones)


def normalize(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    return (x.float().div_(255) - mean) / std


@torch.inference_mode()
def evaluate(model, x, y, mean, std, device, precision="fp32", batch_size=1000, channels_last=True, group=None):
    """Mean cross-entropy and error fraction of `model` (eval mode) on uint8 images x; with a
    distributed group, each rank scores its share of the images and the sums are reduced."""
    n = len(y)
    if group is not None and group.active:
        part = group.shard(n)
        x, y = x[part], y[part]
    was_training = model.training
    model.eval()
    loss_sum = torch.zeros((), device=device, dtype=torch.float64)
    wrong = torch.zeros((), device=device, dtype=torch.int64)
    for i in range(0, len(y), batch_size):
        xb = normalize(x[i : i + batch_size].to(device, non_blocking=True), mean, std)
        if channels_last:
            xb = xb.contiguous(memory_format=torch.channels_last)
        yb = y[i : i + batch_size].to(device, non_blocking=True)
        with autocast(device, precision):
            out = model(xb)
        loss_sum += F.cross_entropy(out.float(), yb, reduction="sum")
        wrong += (out.argmax(1) != yb).sum()
    model.train(was_training)
    if group is not None and group.active:
        total = group.all_sum(torch.stack([loss_sum, wrong.double()]))
        loss_sum, wrong = total[0], total[1]
    n = max(1, n)
    return loss_sum.item() / n, wrong.item() / n


def environment(device: torch.device) -> dict:
    import numpy

    env = {
        "reslab": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "platform": platform.platform(),
        "device": str(device),
        "threads": torch.get_num_threads(),
    }
    if device.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(device)
    else:
        env["cpu"] = platform.processor() or platform.machine()
    return env


class StopRequest(Catching):
    """Turns SIGINT/SIGTERM into a flag checked between steps, so a checkpoint is never taken
    in the middle of an optimizer update. A second Ctrl-C interrupts at once, except in a worker
    of an experiment: there every signal is only a request to stop (a dying driver can send
    several), and one that arrives between cells keeps the next cell from starting."""

    worker = False
    early = None  # in a worker: the signal that asked it to stop, if one came

    @classmethod
    def in_worker(cls) -> None:
        cls.worker = True
        for s in STOP_SIGNALS:
            signal.signal(s, cls.note)

    @classmethod
    def note(cls, signum, frame) -> None:
        cls.early = cls.early or signum

    def __init__(self):
        super().__init__()
        self.signal = StopRequest.early
        self.abortable = False  # set while the first step compiles: a stop need not wait for it

    def handle(self, signum, frame):
        if StopRequest.worker:
            StopRequest.note(signum, frame)
        elif self.signal is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signal = self.signal or signum
        if self.abortable:
            raise KeyboardInterrupt  # nothing to save: the step being compiled has changed no weight yet


@dataclass
class Run:
    """What the loop needs besides the config: data on the device, the model, the plan."""

    cfg: TrainConfig
    out: Path
    group: distributed.Group
    data: Dataset
    model: torch.nn.Module
    device: torch.device
    precision: str
    mean: torch.Tensor
    std: torch.Tensor
    steps_per_epoch: int
    batch_size: int
    total: int
    milestones: list[int]
    warmup: bool
    augment: bool
    eval_every: int
    compile: bool


def setup(
    cfg: TrainConfig,
    out: Path,
    data: Dataset | None = None,
    group: distributed.Group | None = None,
    device: torch.device | None = None,
) -> tuple[Run, dict]:
    """Load data, build the model and resolve every choice; returns the run and its config.json."""
    cfg.validate()
    group = group or distributed.Group()
    device = device or resolve_device(cfg.device)
    if data is None:
        data = load_dataset(cfg.dataset, cfg.data_dir, cfg.download)
    data = prepare(data, cfg.subset, cfg.val_split, cfg.seed, cfg.test_subset)
    n = len(data.train_y)
    batch_size = min(cfg.batch_size, n)
    if batch_size % group.world:
        raise UserError(
            f"the batch of {batch_size} images cannot be split evenly over {group.world} processes; "
            "choose a --batch-size that is a multiple of the number of processes."
        )
    steps_per_epoch = max(1, n // batch_size)  # the last incomplete batch of an epoch is dropped
    total = total_iterations(cfg, steps_per_epoch)
    mean, std = data.normalization()
    torch.manual_seed(cfg.seed)
    model_cfg = cfg.model_config(data.num_classes, data.image_shape[0])
    model = build_model(model_cfg)
    if cfg.init_from:
        load_initial_weights(model, Path(cfg.init_from))
    precision = resolve_precision(cfg.precision, device)
    if device.type == "cpu":
        accel.keep_freed_memory()
    warmup = cfg.warmup == "on" or (cfg.warmup == "auto" and cfg.depth >= 110)
    augment = cfg.augment == "on" or (cfg.augment == "auto" and data.augment)
    run = Run(
        cfg=cfg,
        out=out,
        group=group,
        data=data,
        model=model,
        device=device,
        precision=precision,
        mean=torch.tensor(mean, device=device).view(1, -1, 1, 1),
        std=torch.tensor(std, device=device).view(1, -1, 1, 1),
        steps_per_epoch=steps_per_epoch,
        batch_size=batch_size,
        total=total,
        milestones=[round(f * total) for f in cfg.milestones],
        warmup=warmup,
        augment=augment,
        eval_every=cfg.eval_every or steps_per_epoch,
        compile=accel.resolve_compile(cfg.compile, total, device, group.active),
    )
    c, h, w = data.image_shape
    config = {
        "train": asdict(cfg),
        "model": model_cfg.to_dict(),
        "resolved": {
            "iterations": total,
            "milestones": run.milestones,
            "batch_size": batch_size,
            "steps_per_epoch": steps_per_epoch,
            "epochs": round(total / steps_per_epoch, 2),
            "warmup": warmup,
            "augment": augment,
            "augment_pad": default_pad(h) if augment else 0,
            "precision": precision,
            "eval_every": run.eval_every,
            "compile": run.compile,
            "processes": group.world,
            "batch_per_process": batch_size // group.world,
            "batchnorm": "global batch" if cfg.sync_bn and group.active else "per process",
            "normalization": {"mean": mean, "std": std},
            "parameters": count_parameters(model),
            "macs": count_macs(model, (c, h, w)),
        },
        "data": {
            "name": data.name,
            "classes": data.classes,
            "image_shape": [c, h, w],
            "train_size": n,
            "val_size": 0 if data.val_y is None else len(data.val_y),
            "test_size": len(data.test_y),
            **data.info,
        },
        "environment": environment(device),
    }
    return run, config


def load_initial_weights(model: torch.nn.Module, path: Path) -> None:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        state = load_file(path)
    except (SafetensorError, OSError) as e:
        raise UserError(f"--init-from {path} cannot be read as safetensors weights ({e}).") from None
    detail = state_mismatch(model, state)
    if detail:
        raise UserError(f"--init-from {path} does not fit this network ({detail}).")
    model.load_state_dict(state, strict=False)


def train(
    cfg: TrainConfig,
    out: str | Path,
    resume: bool = False,
    data: Dataset | None = None,
    progress: bool | None = None,
    log=print,
) -> dict:
    """Train one network into the run directory `out`; returns its final metrics row. Under
    torchrun every process calls this; rank 0 alone locks and writes the run directory."""
    out = Path(out)
    quiet = lambda *_: None  # noqa: E731
    log = log or quiet
    with distributed.session(cfg.device) as (group, device), contextlib.ExitStack() as stack:
        run, config = group.together(lambda: setup(cfg, out, data, group, device))

        def start() -> dict | None:
            if resume and not runs.is_run_dir(out):
                raise UserError(
                    f"--resume: {out} holds no run to resume"
                    + (
                        " (it has a checkpoint but no config.json: it is damaged)"
                        if (out / "checkpoint.pt").exists()
                        else ""
                    )
                    + "; leave out --resume to start a new run there."
                )
            stack.enter_context(runs.run_lock(out))
            return check_run_dir(config, out, resume, log)

        done = group.decide(start)  # on rank 0; the other ranks get its answer (or its error)
        if done is not None:
            return done
        return loop(run, resume, progress if group.main else False, log if group.main else quiet)


def check_run_dir(config: dict, out: Path, resume: bool, log) -> dict | None:
    """Refuse to mix runs; write config.json. Returns the final row if the run is already finished."""
    config_path = out / "config.json"
    if config_path.exists():
        old = runs.read_config(out)
        changed = runs.differences(old["train"], config["train"])
        if changed:
            raise UserError(
                f"{out} holds a run trained with other settings ({'; '.join(changed[:6])}); "
                "choose another --out, or delete that directory to train anew."
            )
        if not resume:
            raise UserError(f"{out} already holds this run; add --resume to continue it, or choose another --out.")
    status = runs.read_status(out)
    if resume and status["state"] == "finished":
        log(f"{out} is already finished; nothing to do.")
        rows = runs.read_metrics(out)
        return rows[-1] if rows else {}
    runs.write_json(config_path, config)
    return None


def save_checkpoint(out: Path, state: dict) -> None:
    import io

    buf = io.BytesIO()
    torch.save(state, buf)
    runs.atomic_write_bytes(out / "checkpoint.pt", buf.getvalue())


def load_checkpoint(path: Path) -> dict:
    """A checkpoint, loaded without unpickling anything but tensors and plain containers."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise UserError(
            f"{path} cannot be loaded safely ({load_failure(e)}). It is truncated, damaged, or holds objects "
            "other than tensors, which reslab never unpickles; delete it to restart the run."
        ) from None


def load_failure(e: Exception) -> str:
    """A short reason for a failed safe torch.load."""
    text = str(e)
    if any(k in text for k in ("Unsupported operand", "invalid load key", "magic number", "zip archive")):
        return "it is not a PyTorch checkpoint file at all"
    if "Weights only load failed" in text:
        found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", text)
        return f"it asks to run {found.group(1)}" if found else "it holds Python objects, not only tensors"
    return one_line(e)


class Interrupted(Exception):
    """Training stopped on request after saving a checkpoint."""


class Diverged(Exception):
    """The training loss became NaN or infinite."""


@dataclass
class LoopState:
    """Everything that changes during training besides model and optimizer; all of it goes into
    the checkpoint, so a resumed run continues bit for bit."""

    iteration: int = 0
    rows: list = field(default_factory=list)
    warmup_until: int | None = None  # iteration at which the warm-up ended (0: no warm-up)
    loss_sum: torch.Tensor | None = None  # since the last evaluation, on the device
    wrong: torch.Tensor | None = None
    window_wrong: torch.Tensor | None = None  # warm-up window
    first_bad: torch.Tensor | None = None  # first iteration with a non-finite loss, -1 if none
    seen: int = 0
    seconds: float = 0.0  # wall time of the run up to the last evaluation


def loop(run: Run, resume: bool, progress: bool | None, log) -> dict:
    cfg, model, dev, out, group = run.cfg, run.model, run.device, run.out, run.group
    main = group.main
    fmt = torch.channels_last if cfg.channels_last else torch.contiguous_format
    if cfg.sync_bn and group.active:
        model = run.model = distributed.convert_sync_bn(model, dev)
    model.to(dev, memory_format=fmt)
    train_x, train_y = run.data.train_x.to(dev), run.data.train_y.to(dev)
    test_x, test_y = run.data.test_x.to(dev), run.data.test_y.to(dev)
    val = None if run.data.val_y is None else (run.data.val_x.to(dev), run.data.val_y.to(dev))
    opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    order_gen = torch.Generator().manual_seed(cfg.seed + 1)  # data order, drawn on the CPU
    aug_gen = torch.Generator(device=dev).manual_seed(cfg.seed + 2)
    pad = default_pad(run.data.image_shape[1])
    n = len(train_y)
    mine = group.shard(run.batch_size)  # this process's slice of every global batch
    zero = lambda dtype: torch.zeros((), device=dev, dtype=dtype)  # noqa: E731
    st = LoopState(
        warmup_until=None if run.warmup else 0,
        loss_sum=zero(torch.float64),
        wrong=zero(torch.int64),
        window_wrong=zero(torch.int64),
        first_bad=zero(torch.int64) - 1,
    )

    ckpt_path = out / "checkpoint.pt"
    # Rank 0 reads the checkpoint and hands it to the others: nodes need not share a disk.
    saved = group.from_main(load_checkpoint(ckpt_path) if main and resume and ckpt_path.exists() else None)
    if saved is not None:
        try:
            model.load_state_dict(saved["model"])
            opt.load_state_dict(saved["optimizer"])
            order_gen.set_state(saved["order_rng"])
            aug_gen.set_state(saved["augment_rng"])
            torch.set_rng_state(saved["torch_rng"])
            st = LoopState(**saved["loop"])
            for name in ("loss_sum", "wrong", "window_wrong", "first_bad"):
                setattr(st, name, getattr(st, name).to(dev))
            if not 0 <= st.iteration <= run.total:
                raise ValueError(f"iteration {st.iteration} is outside 0..{run.total}")
        except (KeyError, TypeError, ValueError, RuntimeError, AttributeError) as e:
            raise UserError(
                f"{ckpt_path} does not fit this run ({one_line(e, 100)}); it is damaged or from another "
                "network. Delete it to restart the run."
            ) from None
        if not main:  # the saved running sums are the totals of all ranks, kept by rank 0
            clear_sums(st)
        log(f"resuming {out} at iteration {st.iteration} of {run.total}")
    if main:
        runs.write_metrics(out, st.rows)  # drops rows a killed process wrote after its last checkpoint
    net = distributed.wrap(model, group, dev)
    if run.compile:
        log("compiling the training step (torch.compile): the first iteration takes a minute or so")
        net = accel.compiled(net, cfg.compile == "on", dev, log)

    # The data order of an epoch is drawn at its first step; a checkpoint keeps the generator
    # state from before that draw, so a run resumed mid-epoch redraws the same order.
    epoch_order_state = order_gen.get_state()
    perm = torch.randperm(n, generator=order_gen).to(dev) if st.iteration % run.steps_per_epoch else None

    def checkpoint() -> None:
        if not main:
            return
        at_boundary = st.iteration % run.steps_per_epoch == 0
        loop_state = {k: (v.detach().cpu() if torch.is_tensor(v) else v) for k, v in asdict(st).items()}
        save_checkpoint(
            out,
            {
                "format": "reslab-checkpoint-1",
                "iteration": st.iteration,
                "model": model.state_dict(),
                "optimizer": opt.state_dict(),
                "order_rng": order_gen.get_state() if at_boundary else epoch_order_state,
                "augment_rng": aug_gen.get_state(),
                "torch_rng": torch.get_rng_state(),
                "loop": loop_state,
            },
        )

    if st.iteration == 0:
        log(plan_text(run))
    bar = make_progress(run, st.iteration, progress)
    board = tensorboard_writer(out) if cfg.tensorboard and main else None
    where = process_info()
    if main:
        runs.write_status(out, "running", iteration=st.iteration, total=run.total, **where)
    period_start = time.perf_counter()
    # The first step of a compiled run compiles it (a minute on a CPU): a stop asked for meanwhile
    # ends it at once (one process only: under torchrun the ranks must agree on the step).
    compiling = run.compile and not group.active
    with StopRequest() as stop:
        while st.iteration < run.total:
            pos = st.iteration % run.steps_per_epoch
            if pos == 0:
                epoch_order_state = order_gen.get_state()
                perm = torch.randperm(n, generator=order_gen).to(dev)
            # Every rank draws and augments the whole global batch (cheap, uint8), so the data
            # are those of a one-process run, then trains on its own slice of it.
            idx = perm[pos * run.batch_size : (pos + 1) * run.batch_size]
            xb = train_x[idx]
            if run.augment:
                xb = pad_crop_flip(xb, pad, aug_gen)
            xb = normalize(xb[mine], run.mean, run.std).contiguous(memory_format=fmt)
            yb = train_y[idx][mine]
            warming = st.warmup_until is None
            lr = cfg.warmup_lr if warming else lr_at(st.iteration, cfg.lr, run.milestones)
            for g in opt.param_groups:
                g["lr"] = lr
            stop.abortable = compiling
            try:
                with quiet_interrupt(compiling):
                    with autocast(dev, run.precision):
                        logits = net(xb)
                    loss = F.cross_entropy(logits.float(), yb)
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
            except KeyboardInterrupt:
                if not compiling:
                    raise
                return stopped_while_compiling(run, st, bar)
            finally:
                stop.abortable = compiling = False
            opt.step()
            # Metrics stay on the device: no host synchronisation per step.
            wrong = (logits.argmax(1) != yb).sum()
            st.loss_sum += loss.detach() * len(yb)
            # Remember where the loss first went NaN/inf, without a host sync.
            bad = (~torch.isfinite(loss.detach())) & (st.first_bad < 0)
            st.first_bad = torch.where(bad, st.iteration + 1, st.first_bad)
            st.wrong += wrong
            st.seen += len(yb)
            st.iteration += 1
            if warming:
                st.window_wrong += wrong
                if st.iteration % WARMUP_WINDOW == 0:
                    end_warmup(st, run, pool_sums(st, group)["window_wrong"], log)
            if bar is not None:
                bar.update(1)
            if st.iteration % run.eval_every == 0 or st.iteration == run.total:
                sums = pool_sums(st, group)
                train_loss = sums["loss_sum"] / sums["seen"]
                if not math.isfinite(train_loss):
                    return diverged(run, st, bar)
                ips = sums["seen"] / max(1e-9, time.perf_counter() - period_start)
                row = {
                    "epoch": round(st.iteration / run.steps_per_epoch, 3),
                    "iteration": st.iteration,
                    "lr": lr,
                    "train_loss": round(train_loss, 6),
                    "train_error": round(sums["wrong"] / sums["seen"], 6),
                }
                # Rank 0's BatchNorm running statistics are the model's: the ones evaluated and saved.
                distributed.share_buffers(model, group)
                if val is not None:
                    row["val_loss"], row["val_error"] = evaluate(
                        model, *val, run.mean, run.std, dev, run.precision, channels_last=cfg.channels_last, group=group
                    )
                row["test_loss"], row["test_error"] = evaluate(
                    model,
                    test_x,
                    test_y,
                    run.mean,
                    run.std,
                    dev,
                    run.precision,
                    channels_last=cfg.channels_last,
                    group=group,
                )
                # A checkpoint is only ever written of weights that are all finite.
                if not (math.isfinite(row["test_loss"]) and finite_weights(model)):
                    return diverged(run, st, bar)
                st.seconds += time.perf_counter() - period_start
                row.update(seconds=round(st.seconds, 3), images_per_second=round(ips, 1))
                st.rows.append({k: round(v, 6) if isinstance(v, float) else v for k, v in row.items()})
                clear_sums(st, window=False)  # the warm-up window runs on across evaluations
                checkpoint()
                if main:
                    runs.write_metrics(out, st.rows)
                    runs.write_status(out, "running", iteration=st.iteration, total=run.total, **where)
                report_progress(bar, st.rows[-1], run, log)
                if board is not None:
                    for key, value in st.rows[-1].items():
                        if key not in ("epoch", "iteration") and value is not None:
                            board.add_scalar(key, value, st.iteration)
                    board.flush()
                period_start = time.perf_counter()
            asked = stop.signal is not None
            if group.active:  # every rank votes at the same iterations, so all stop at the same one
                at_vote = st.iteration % STOP_VOTE_EVERY == 0 or st.iteration == run.total
                asked = at_vote and group.any(asked)
            if asked and st.iteration < run.total:
                if bar is not None:
                    bar.close()
                st.seconds += time.perf_counter() - period_start
                pool_sums(st, group)
                distributed.share_buffers(model, group)
                checkpoint()
                msg = (
                    f"interrupted at iteration {st.iteration} of {run.total}; checkpoint saved. "
                    f"Resume with the same command and --resume (reslab train ... --out {out} --resume)."
                )
                if main:
                    runs.write_status(out, "interrupted", msg, iteration=st.iteration, total=run.total)
                raise Interrupted(msg)
    if bar is not None:
        bar.close()
    if main:
        save_weights(model, out / "model.safetensors")
        runs.write_status(out, "finished", f"finished {run.total} iterations", iteration=st.iteration, total=run.total)
    return st.rows[-1]


@contextlib.contextmanager
def quiet_interrupt(compiling: bool):
    """While the first step compiles, an interrupt inside the backward makes autograd warn with the
    forward's stack trace: not a message for someone who pressed Ctrl-C."""
    if not compiling:
        yield
        return
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Error detected in")
        yield


def stopped_while_compiling(run: Run, st: LoopState, bar) -> dict:
    """A stop during the compiling first step: no weight has changed since the last checkpoint."""
    if bar is not None:
        bar.close()
    msg = (
        f"interrupted while compiling the training step, at iteration {st.iteration} of {run.total} "
        "(nothing was lost: the run is as its last checkpoint left it). Resume with the same command and "
        f"--resume (reslab train ... --out {run.out} --resume)."
    )
    if run.group.main:
        runs.write_status(run.out, "interrupted", msg, iteration=st.iteration, total=run.total)
    raise Interrupted(msg)


def plan_text(run: Run) -> str:
    """What is about to be trained and for how long, said before it starts: the paper's 64k
    iterations are 182 epochs of its 45k-image split, but thousands on a small dataset."""
    epochs = run.total / run.steps_per_epoch
    text = (
        f"{run.cfg.arch}-{run.cfg.depth} on {run.data.name}: {run.total:,} iterations of {run.batch_size} images "
        f"({epochs:,.1f} epochs of {len(run.data.train_y):,} training images), lr drops at "
        f"{', '.join(f'{m:,}' for m in run.milestones)}, evaluated every {min(run.eval_every, run.total):,} iterations"
    )
    if epochs > 1000 and run.cfg.iterations is None and run.cfg.epochs is None and run.cfg.scale is None:
        text += "; that is the paper's length, chosen for CIFAR-10: shorten it with --epochs or --iterations"
    return text


def process_info() -> dict:
    """Where a run is being trained, for status.json (a grid's driver shows it; tests kill it)."""
    import os
    import socket

    return {"pid": os.getpid(), "host": socket.gethostname()}


def pool_sums(st: LoopState, group: distributed.Group) -> dict:
    """The running sums of all ranks. Rank 0 keeps the totals (they go into its checkpoint), the
    other ranks start counting again from zero; one process just reads its own."""
    t = torch.stack([st.loss_sum, st.wrong.double(), st.window_wrong.double(), st.loss_sum.new_tensor(st.seen)])
    if group.active:
        group.all_sum(t)
        if group.main:
            st.loss_sum.copy_(t[0])
            st.wrong.copy_(t[1].long())
            st.window_wrong.copy_(t[2].long())
            st.seen = int(t[3].item())
        else:
            clear_sums(st)
    loss_sum, wrong, window_wrong, seen = t.tolist()
    return {"loss_sum": loss_sum, "wrong": wrong, "window_wrong": window_wrong, "seen": max(1, seen)}


def clear_sums(st: LoopState, window: bool = True) -> None:
    st.loss_sum.zero_()
    st.wrong.zero_()
    st.seen = 0
    if window:
        st.window_wrong.zero_()


def end_warmup(st: LoopState, run: Run, window_wrong: float, log) -> None:
    """End the warm-up once the training error over the last window is below the threshold, and
    at the latest at the first lr drop, so that it can never hold the lr at 0.01 for good."""
    err = window_wrong / (WARMUP_WINDOW * run.batch_size)
    st.window_wrong.zero_()
    if err < run.cfg.warmup_error or st.iteration >= min(run.milestones, default=run.total):
        st.warmup_until = st.iteration
        log(
            f"warm-up ended at iteration {st.iteration} (training error {err:.1%} over the last "
            f"{WARMUP_WINDOW} iterations); lr back to {run.cfg.lr:g}"
        )


def diverged(run: Run, st: LoopState, bar) -> dict:
    if bar is not None:
        bar.close()
    first_bad = int(run.group.first(st.first_bad).item())
    last = int(st.rows[-1]["iteration"]) if st.rows else 0
    kept = f"the last good checkpoint (iteration {last}) is kept" if st.rows else "no checkpoint had been written yet"
    where = (
        f"the loss became NaN or infinite at iteration {first_bad}"
        if first_bad > 0
        else f"the weights or the test loss became NaN or infinite by iteration {st.iteration}"
    )
    msg = f"training diverged: {where}; {kept}. Lower --lr or turn on --warmup."
    if run.group.main:
        runs.write_status(run.out, "diverged", msg, iteration=st.iteration)
    raise Diverged(msg)


def finite_weights(model: torch.nn.Module) -> bool:
    """Whether every floating-point parameter and buffer is finite (one host read)."""
    checks = [torch.isfinite(t).all() for t in model.state_dict().values() if t.is_floating_point()]
    return bool(torch.stack(checks).all()) if checks else True


def save_weights(model: torch.nn.Module, path: Path) -> None:
    from safetensors.torch import save

    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    runs.atomic_write_bytes(path, save(tensors))


def tensorboard_writer(out: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise UserError("--tensorboard needs the tensorboard package: pip install 'reslab[tensorboard]'") from None
    return SummaryWriter(str(out / "tensorboard"))


def make_progress(run: Run, start: int, progress: bool | None):
    if progress is None:
        progress = sys.stderr.isatty()
    if not progress:
        return None
    from tqdm import tqdm

    name = f"{run.cfg.arch}-{run.cfg.depth}"
    return tqdm(total=run.total, initial=start, desc=name, unit="it", dynamic_ncols=True, leave=False)


def report_progress(bar, row: dict, run: Run, log) -> None:
    text = (
        f"train err {row['train_error']:.2%} loss {row['train_loss']:.3f} | test err {row['test_error']:.2%}"
        f" | lr {row['lr']:g} | {row['images_per_second']:.0f} img/s"
    )
    if bar is not None:
        bar.set_postfix_str(text)
    elif log is not None:
        log(f"{run.cfg.arch}-{run.cfg.depth} epoch {row['epoch']:g} it {row['iteration']:.0f}/{run.total}: {text}")
