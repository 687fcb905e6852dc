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
import signal
import sys
import threading
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from reslab import accel, distributed, files, runs, schema, step
from reslab.augment import default_pad
from reslab.config import TrainConfig
from reslab.data import Dataset, load_dataset, prepare, resize
from reslab.errors import UserError, one_line
from reslab.evaluate import score
from reslab.models import build_model, describe, state_mismatch
from reslab.signals import STOP_SIGNALS, Catching

PAPER_ITERATIONS = 64_000
SEEDING = threading.Lock()
WARMUP_WINDOW = 20  # iterations over which the warm-up's training error is measured
STOP_VOTE_EVERY = 10  # under torchrun, iterations between the ranks' votes on a stop request


def total_iterations(cfg: TrainConfig, steps_per_epoch: int) -> int:
    if cfg.iterations is not None:
        return int(cfg.iterations)
    if cfg.epochs is not None:
        return max(1, round(cfg.epochs * steps_per_epoch))
    return max(1, round(PAPER_ITERATIONS * (cfg.scale if cfg.scale is not None else 1.0)))


def lr_at(
    iteration: int,
    base_lr: float,
    milestones: list[int],
    schedule: str = "step",
    total: int = 1,
    ramp: int = 0,
    ramp_from: float = 0.01,
) -> float:
    """The lr of an iteration. A linear warm-up (Goyal et al. 2017) first raises it from
    `ramp_from` to `base_lr` over `ramp` iterations; then the step schedule divides it by 10 at
    each milestone passed (paper), or the cosine schedule (Loshchilov & Hutter 2017) lowers it to
    0 along a half cosine by the end of the run."""
    if iteration < ramp:
        return ramp_from + (base_lr - ramp_from) * iteration / ramp
    if schedule == "cosine":
        done = (iteration - ramp) / max(1, total - ramp)
        return base_lr * 0.5 * (1 + math.cos(math.pi * done))
    return base_lr * 0.1 ** sum(iteration >= m for m in milestones)


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
    cuda_graphs: bool


def setup(
    cfg: TrainConfig,
    out: Path,
    data: Dataset | None = None,
    group: distributed.Group | None = None,
    device: torch.device | None = None,
) -> tuple[Run, runs.RunConfig]:
    """Load data, build the model and resolve every choice; returns the run and its config.json."""
    cfg.validate()
    group = group or distributed.Group()
    device = device or accel.resolve_device(cfg.device)
    if data is None:
        data = load_dataset(cfg.dataset, cfg.data_dir, cfg.download)
    data = prepare(resize(data, cfg.image_size), cfg.subset, cfg.val_split, cfg.seed, cfg.test_subset)
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
    model_cfg = cfg.model_config(data.num_classes, data.image_shape[0])
    with SEEDING:  # the global generator: cells trained on threads must not draw each other's weights
        torch.manual_seed(cfg.seed)
        model = build_model(model_cfg)
        if cfg.init == "torch":
            model.torch_default_init()
    if cfg.init_from:
        load_initial_weights(model, Path(cfg.init_from))
    precision = accel.resolve_precision(cfg.precision, device)
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
        milestones=[round(f * total) for f in cfg.milestones] if cfg.schedule == "step" else [],
        warmup=warmup,
        augment=augment,
        eval_every=cfg.eval_every or steps_per_epoch,
        compile=accel.resolve_compile(cfg.compile, total, device, group.active),
        # A graph bakes in its lr: a cosine schedule, whose lr changes at every iteration, runs eagerly.
        cuda_graphs=cfg.schedule == "step" and step.resolve(cfg.cuda_graphs, device, group.active),
    )
    c, h, w = data.image_shape
    config = runs.RunConfig(
        train=cfg,
        model=model_cfg,
        resolved=runs.Resolved(
            iterations=total,
            milestones=run.milestones,
            batch_size=batch_size,
            steps_per_epoch=steps_per_epoch,
            epochs=round(total / steps_per_epoch, 2),
            warmup=warmup,
            augment=augment,
            augment_pad=default_pad(h) if augment else 0,
            precision=precision,
            eval_every=run.eval_every,
            compile=run.compile,
            cuda_graphs=run.cuda_graphs,
            processes=group.world,
            batch_per_process=batch_size // group.world,
            batchnorm="global batch" if cfg.sync_bn and group.active else "per process",
            normalization={"mean": mean, "std": std},
            **describe(model, (c, h, w)),
        ),
        data=runs.DataInfo(
            name=data.name,
            classes=data.classes,
            image_shape=[c, h, w],
            train_size=n,
            val_size=0 if data.val_y is None else len(data.val_y),
            test_size=len(data.test_y),
            **data.info,
        ),
        environment=accel.environment(device),
    )
    return run, config


def load_initial_weights(model: torch.nn.Module, path: Path) -> None:
    state = runs.load_weights(path, f"--init-from {path}")
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


def check_run_dir(config: runs.RunConfig, out: Path, resume: bool, log) -> dict | None:
    """Refuse to mix runs; write config.json. Returns the final row if the run is already finished."""
    if runs.is_run_dir(out):
        old = runs.read_config(out)
        changed = runs.differences(asdict(old.train), asdict(config.train))
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
    runs.write_run(out, config)
    return None


class Interrupted(Exception):
    """Training stopped on request after saving a checkpoint."""


class Diverged(Exception):
    """The training loss became NaN or infinite."""


@dataclass
class TrainState:
    """Everything that changes during training: model, optimizer, the generators of data order
    and augmentation, the running sums (on the device) and the loop's counters. capture() is
    the checkpoint and restore() takes one back, so a resumed run continues bit for bit."""

    model: torch.nn.Module
    opt: torch.optim.Optimizer
    order_gen: torch.Generator  # data order, drawn on the CPU
    aug_gen: torch.Generator
    sums: step.Sums
    iteration: int = 0
    rows: list = field(default_factory=list)
    warmup_until: int | None = None  # iteration at which the warm-up ended (0: no warm-up)
    seen: int = 0  # images since the last evaluation
    seconds: float = 0.0  # wall time of the run up to the last evaluation
    epoch_order_state: torch.Tensor | None = None  # order_gen before this epoch's draw
    perm: torch.Tensor | None = None  # this epoch's data order

    COUNTERS = ("iteration", "rows", "warmup_until", "seen", "seconds")
    SUMS = ("loss_sum", "wrong", "window_wrong", "first_bad")

    @classmethod
    def start(cls, run: Run) -> TrainState:
        cfg, dev = run.cfg, run.device
        fmt = torch.channels_last if cfg.channels_last else torch.contiguous_format
        if cfg.sync_bn and run.group.active:
            run.model = distributed.convert_sync_bn(run.model, dev)
        run.model.to(dev, memory_format=fmt)  # type: ignore[call-overload]
        # Every step sets the schedule's lr (step.set_lr) before it updates; the lr given here is
        # only there because torch 2.1 (which reslab supports) requires one.
        opt = torch.optim.SGD(run.model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
        return cls(
            model=run.model,
            opt=opt,
            order_gen=torch.Generator().manual_seed(cfg.seed + 1),
            aug_gen=torch.Generator(device=dev).manual_seed(cfg.seed + 2),
            sums=step.Sums.zeros(dev),
            warmup_until=None if run.warmup else 0,
        )

    def capture(self, steps_per_epoch: int) -> dict:
        """The checkpoint. The data order of an epoch is drawn at its first step; mid-epoch the
        checkpoint keeps the generator state from before that draw, so a resumed run redraws it."""
        at_boundary = self.iteration % steps_per_epoch == 0 or self.perm is None
        return {
            "format": "reslab-checkpoint-1",
            "iteration": self.iteration,
            "model": self.model.state_dict(),
            "optimizer": self.opt.state_dict(),
            "order_rng": self.order_gen.get_state() if at_boundary else self.epoch_order_state,
            "augment_rng": self.aug_gen.get_state(),
            "torch_rng": torch.get_rng_state(),
            "loop": {
                **{k: getattr(self, k) for k in self.COUNTERS},
                **{k: getattr(self.sums, k).detach().cpu() for k in self.SUMS},
            },
        }

    def restore(self, saved: dict, total: int) -> None:
        """Take a checkpoint back; the running sums are copied into the tensors a recorded step writes."""
        self.model.load_state_dict(saved["model"])
        self.opt.load_state_dict(saved["optimizer"])
        self.order_gen.set_state(saved["order_rng"])
        self.aug_gen.set_state(saved["augment_rng"])
        torch.set_rng_state(saved["torch_rng"])
        loop = dict(saved["loop"])
        for k in self.SUMS:
            getattr(self.sums, k).copy_(loop.pop(k))
        for k in self.COUNTERS:
            setattr(self, k, loop.pop(k))
        if loop:
            raise KeyError(f"unknown loop entries {sorted(loop)}")
        self.check_counters(total)
        self.sums.iteration.fill_(self.iteration)

    def check_counters(self, total: int) -> None:
        """The loop state a checkpoint gave back is one training can produce: counters whole and in
        range, metrics rows as metrics.csv must hold them, running sums finite and not negative."""
        count = schema.is_count
        if not (count(self.iteration) and self.iteration <= total):
            raise ValueError(f"iteration {self.iteration!r} is outside 0..{total}")
        if not (self.warmup_until is None or count(self.warmup_until) and self.warmup_until <= self.iteration):
            raise ValueError(f"warmup_until {self.warmup_until!r} is not an iteration done")
        if not count(self.seen) or type(self.seconds) not in (int, float) or not 0 <= self.seconds < math.inf:
            raise ValueError("the images seen or the seconds are not counts")
        if not isinstance(self.rows, list) or len(self.rows) > self.iteration:
            raise ValueError("the metrics rows are not a list of at most one row per iteration")
        for i, row in enumerate(self.rows):
            if not isinstance(row, dict) or set(row) - set(runs.METRIC_FIELDS) or "iteration" not in row:
                raise ValueError(f"metrics row {i} is not a row of metrics")
            if not all(v is None or type(v) in (int, float) for v in row.values()):
                raise ValueError(f"metrics row {i} holds a value that is not a number")
            numbers = {k: (None if v is None else float(v)) for k, v in row.items()}
            schema.check_row({**dict.fromkeys(runs.METRIC_FIELDS), **numbers}, self.rows[i - 1] if i else None, i)
            if row["iteration"] > self.iteration:
                raise ValueError(f"metrics row {i} is of iteration {row['iteration']}, after the checkpoint's")
        for k in self.SUMS:
            t = getattr(self.sums, k)
            if t.is_floating_point() and not bool(torch.isfinite(t).all() and (t >= 0).all()):
                raise ValueError(f"the running sum {k} is not finite and non-negative")

    def next_batch(self, run: Run) -> tuple[torch.Tensor, float, bool]:
        """This iteration's image indices (a new data order at each epoch's start), lr and
        whether the warm-up is on."""
        pos = self.iteration % run.steps_per_epoch
        if pos == 0 or self.perm is None:  # (None: resumed mid-epoch, order_gen as the epoch began)
            self.epoch_order_state = self.order_gen.get_state()
            self.perm = torch.randperm(len(run.data.train_y), generator=self.order_gen).to(run.device)
        idx = self.perm[pos * run.batch_size : (pos + 1) * run.batch_size]
        warming = self.warmup_until is None
        cfg = run.cfg
        lr = (
            cfg.warmup_lr
            if warming
            else lr_at(
                self.iteration, cfg.lr, run.milestones, cfg.schedule, run.total, cfg.linear_warmup, cfg.warmup_lr
            )
        )
        return idx, lr, warming


def make_step(run: Run, ts: TrainState, log) -> step.Eager:
    """The training step of this run: eager, or recorded as CUDA graphs (--cuda-graphs)."""
    net = distributed.wrap(ts.model, run.group, run.device)
    if run.compile:
        net = accel.compiled(net, run.cfg.compile == "on", run.device, log)
    inputs = step.StepInputs(
        net=net,
        opt=ts.opt,
        train_x=run.data.train_x,
        train_y=run.data.train_y,
        mean=run.mean,
        std=run.std,
        aug_gen=ts.aug_gen if run.augment else None,
        pad=default_pad(run.data.image_shape[1]),
        mine=run.group.shard(run.batch_size),  # this process's slice of every global batch
        precision=run.precision,
        memory_format=torch.channels_last if run.cfg.channels_last else torch.contiguous_format,
    )
    if run.cuda_graphs:
        return step.Graphed(inputs, ts.sums, run.batch_size, strict=run.cfg.cuda_graphs == "on", log=log)
    return step.Eager(inputs, ts.sums)


def resume_from(run: Run, ts: TrainState, log) -> None:
    """Load the run's checkpoint into ts; rank 0 reads it and hands it to the others (nodes
    need not share a disk)."""
    path = run.out / "checkpoint.pt"
    main = run.group.main
    saved = run.group.from_main(runs.load_checkpoint(path) if main and path.exists() else None)
    if saved is None:
        return
    try:
        ts.restore(saved, run.total)
    except (KeyError, TypeError, ValueError, RuntimeError, AttributeError) as e:
        raise UserError(
            f"{path} does not fit this run ({one_line(e, 100)}); it is damaged or from another "
            "network. Delete it to restart the run."
        ) from None
    if not main:  # the saved running sums are the totals of all ranks, kept by rank 0
        clear_sums(ts)
    log(f"resuming {run.out} at iteration {ts.iteration} of {run.total}")


def loop(run: Run, resume: bool, progress: bool | None, log) -> dict:
    run.data = run.data.to(run.device)  # the images live on the training device for the whole run
    ts = TrainState.start(run)
    if resume:
        resume_from(run, ts, log)
    if run.group.main:
        runs.write_metrics(run.out, ts.rows)  # drops rows a killed process wrote after its last checkpoint
    train_step = make_step(run, ts, log)
    if ts.iteration == 0:
        log(plan_text(run))
    bar = make_progress(run, ts.iteration, progress)
    board = tensorboard_writer(run.out) if run.cfg.tensorboard and run.group.main else None
    where = process_info()
    if run.group.main:
        runs.write_status(run.out, "running", iteration=ts.iteration, total=run.total, **where)
    period_start = time.perf_counter()
    compiling = run.compile  # the first step of a compiled run compiles it (a minute on a CPU)
    with StopRequest() as stop:
        while ts.iteration < run.total:
            idx, lr, warming = ts.next_batch(run)
            with compile_abortable(stop, compiling, run, ts, bar, log):
                train_step(idx, lr, warming)
            compiling = False
            ts.seen += run.batch_size // run.group.world
            ts.iteration += 1
            if warming and ts.iteration % WARMUP_WINDOW == 0:
                end_warmup(ts, run, pool_sums(ts, run.group)["window_wrong"], log)
            if bar is not None:
                bar.update(1)
            if ts.iteration % run.eval_every == 0 or ts.iteration == run.total:
                row = end_period(run, ts, lr, period_start, bar)
                record_period(run, ts, row, where, bar, board, log)
                period_start = time.perf_counter()
            if stop_requested(stop, run, ts):
                interrupt(run, ts, period_start, bar)
    if bar is not None:
        bar.close()
    if run.group.main:
        runs.save_weights(ts.model, run.out / "model.safetensors")
        runs.write_status(
            run.out, "finished", f"finished {run.total} iterations", iteration=ts.iteration, total=run.total
        )
    return ts.rows[-1]


def end_period(run: Run, ts: TrainState, lr: float, period_start: float, bar) -> dict:
    """The metrics row of the evaluation period that just ended (training sums of all ranks,
    validation and test scores); raises Diverged on a non-finite loss or weight."""
    sums = pool_sums(ts, run.group)
    train_loss = sums["loss_sum"] / sums["seen"]
    if not math.isfinite(train_loss):
        diverged(run, ts, bar)
    ips = sums["seen"] / max(1e-9, time.perf_counter() - period_start)
    row = {
        "epoch": round(ts.iteration / run.steps_per_epoch, 3),
        "iteration": ts.iteration,
        "lr": lr,
        "train_loss": round(train_loss, 6),
        "train_error": round(sums["wrong"] / sums["seen"], 6),
    }
    # Rank 0's BatchNorm running statistics are the model's: the ones evaluated and saved.
    distributed.share_buffers(ts.model, run.group)
    scoring = dict(precision=run.precision, channels_last=run.cfg.channels_last, group=run.group)
    data = run.data
    if data.val_y is not None:
        row["val_loss"], row["val_error"] = score(ts.model, data.val_x, data.val_y, run.mean, run.std, **scoring)
    row["test_loss"], row["test_error"] = score(ts.model, data.test_x, data.test_y, run.mean, run.std, **scoring)
    # A checkpoint is only ever written of weights that are all finite.
    if not (math.isfinite(row["test_loss"]) and finite_weights(ts.model)):
        diverged(run, ts, bar)
    ts.seconds += time.perf_counter() - period_start
    row.update(seconds=round(ts.seconds, 3), images_per_second=round(ips, 1))
    return {k: round(v, 6) if isinstance(v, float) else v for k, v in row.items()}


def record_period(run: Run, ts: TrainState, row: dict, where: dict, bar, board, log) -> None:
    """Keep the row: checkpoint, metrics.csv, status, progress and TensorBoard."""
    ts.rows.append(row)
    clear_sums(ts, window=False)  # the warm-up window runs on across evaluations
    if run.group.main:
        runs.save_checkpoint(run.out, ts.capture(run.steps_per_epoch))
        runs.write_metrics(run.out, ts.rows)
        runs.write_status(run.out, "running", iteration=ts.iteration, total=run.total, **where)
    report_progress(bar, row, run, log)
    if board is not None:
        for key, value in row.items():
            if key not in ("epoch", "iteration") and value is not None:
                board.add_scalar(key, value, ts.iteration)
        board.flush()


def stop_requested(stop: StopRequest, run: Run, ts: TrainState) -> bool:
    """Whether to stop now; under torchrun every rank votes at the same iterations, so all stop
    at the same one."""
    asked = (stop.signal or StopRequest.early) is not None  # early: a worker's cells on threads
    if run.group.active:
        at_vote = ts.iteration % STOP_VOTE_EVERY == 0 or ts.iteration == run.total
        asked = at_vote and run.group.any(asked)
    return asked and ts.iteration < run.total


def interrupt(run: Run, ts: TrainState, period_start: float, bar) -> None:
    """Save a checkpoint and say how to resume."""
    if bar is not None:
        bar.close()
    ts.seconds += time.perf_counter() - period_start
    pool_sums(ts, run.group)
    distributed.share_buffers(ts.model, run.group)
    if run.group.main:
        runs.save_checkpoint(run.out, ts.capture(run.steps_per_epoch))
    msg = (
        f"interrupted at iteration {ts.iteration} of {run.total}; checkpoint saved. "
        f"Resume with the same command and --resume (reslab train ... --out {run.out} --resume)."
    )
    if run.group.main:
        runs.write_status(run.out, "interrupted", msg, iteration=ts.iteration, total=run.total)
    raise Interrupted(msg)


@contextlib.contextmanager
def compile_abortable(stop: StopRequest, compiling: bool, run: Run, ts: TrainState, bar, log):
    """While the first step compiles, a stop ends the run at once (nothing has changed since the
    last checkpoint)."""
    # One process only: under torchrun the ranks must agree on the step they stop at.
    abortable = stop.abortable = compiling and not run.group.active
    if compiling:  # said only now, once a stop can end the compile at once
        log("compiling the training step (torch.compile): the first iteration takes a minute or so")
    try:
        with quiet_interrupt(abortable):
            yield
    except KeyboardInterrupt:
        if not abortable:
            raise
        stopped_while_compiling(run, ts, bar)
    finally:
        stop.abortable = False


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


def stopped_while_compiling(run: Run, st: TrainState, bar) -> None:
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
    cfg = run.cfg
    if cfg.schedule == "cosine":
        lr = f"lr {cfg.lr:g} falling to 0 along a cosine"
    else:
        lr = f"lr drops at {', '.join(f'{m:,}' for m in run.milestones)}"
    if cfg.linear_warmup:
        lr = f"lr rising from {cfg.warmup_lr:g} over the first {cfg.linear_warmup:,} iterations, then {lr}"
    side = run.data.image_shape[1]
    text = (
        f"{cfg.arch}-{cfg.depth} on {run.data.name} ({side}x{side}): {run.total:,} iterations of {run.batch_size} "
        f"images ({epochs:,.1f} epochs of {len(run.data.train_y):,} training images), {lr}, evaluated every "
        f"{min(run.eval_every, run.total):,} iterations"
    )
    if epochs > 1000 and run.cfg.iterations is None and run.cfg.epochs is None and run.cfg.scale is None:
        text += "; that is the paper's length, chosen for CIFAR-10: shorten it with --epochs or --iterations"
    return text


def process_info() -> dict:
    """Where a run is being trained, for status.json (a grid's driver shows it; tests kill it)."""
    import os
    import socket

    return {"pid": os.getpid(), "host": socket.gethostname()}


def pool_sums(ts: TrainState, group: distributed.Group) -> dict:
    """The running sums of all ranks. Rank 0 keeps the totals (they go into its checkpoint), the
    other ranks start counting again from zero; one process just reads its own."""
    m = ts.sums
    t = torch.stack([m.loss_sum, m.wrong.double(), m.window_wrong.double(), m.loss_sum.new_tensor(ts.seen)])
    if group.active:
        group.all_sum(t)
        if group.main:
            m.loss_sum.copy_(t[0])
            m.wrong.copy_(t[1].long())
            m.window_wrong.copy_(t[2].long())
            ts.seen = int(t[3].item())
        else:
            clear_sums(ts)
    loss_sum, wrong, window_wrong, seen = t.tolist()
    return {"loss_sum": loss_sum, "wrong": wrong, "window_wrong": window_wrong, "seen": max(1, seen)}


def clear_sums(ts: TrainState, window: bool = True) -> None:
    ts.sums.loss_sum.zero_()
    ts.sums.wrong.zero_()
    ts.seen = 0
    if window:
        ts.sums.window_wrong.zero_()


def end_warmup(ts: TrainState, run: Run, window_wrong: float, log) -> None:
    """End the warm-up once the training error over the last window is below the threshold, and
    at the latest at the first lr drop, so that it can never hold the lr at 0.01 for good."""
    err = window_wrong / (WARMUP_WINDOW * run.batch_size)
    ts.sums.window_wrong.zero_()
    if err < run.cfg.warmup_error or ts.iteration >= min(run.milestones, default=run.total):
        ts.warmup_until = ts.iteration
        log(
            f"warm-up ended at iteration {ts.iteration} (training error {err:.1%} over the last "
            f"{WARMUP_WINDOW} iterations); lr back to {run.cfg.lr:g}"
        )


def diverged(run: Run, st: TrainState, bar) -> None:
    if bar is not None:
        bar.close()
    first_bad = int(run.group.first(st.sums.first_bad).item())
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


def tensorboard_writer(out: Path):
    check_tensorboard()
    from torch.utils.tensorboard import SummaryWriter

    return SummaryWriter(str(files.own_folder(out / "tensorboard")))


def check_tensorboard() -> None:
    """--tensorboard needs the tensorboard package: said once, before anything trains."""
    try:
        from torch.utils.tensorboard import SummaryWriter  # noqa: F401
    except ImportError:
        raise UserError("--tensorboard needs the tensorboard package: pip install 'reslab[tensorboard]'") from None


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
