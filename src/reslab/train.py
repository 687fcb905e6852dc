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
import logging
import math
import threading
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import NoReturn

import torch

from reslab import accel, checkpoints, distributed, runs, schema, step
from reslab.augment import default_pad
from reslab.config import TrainConfig, differences
from reslab.data import Dataset, load_dataset, prepare, resize
from reslab.errors import UserError, one_line
from reslab.evaluate import score
from reslab.log import silenced
from reslab.models import build_model, describe, state_mismatch
from reslab.progress import Progress
from reslab.schedule import Schedule
from reslab.signals import StopRequest

log = logging.getLogger(__name__).info
PAPER_ITERATIONS = 64_000
SEEDING = threading.Lock()
ERROR_WINDOW = 20  # iterations over which the paper's low-lr start measures the training error
STOP_VOTE_EVERY = 10  # under torchrun, iterations between the ranks' votes on a stop request


def total_iterations(cfg: TrainConfig, steps_per_epoch: int) -> int:
    if cfg.iterations is not None:
        return int(cfg.iterations)
    if cfg.epochs is not None:
        return max(1, round(cfg.epochs * steps_per_epoch))
    return max(1, round(PAPER_ITERATIONS * (cfg.scale if cfg.scale is not None else 1.0)))


@dataclass
class Plan:
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
    schedule: Schedule
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
) -> tuple[Plan, runs.RunConfig]:
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
    if cfg.linear_warmup > total:
        raise UserError(
            f"--linear-warmup {cfg.linear_warmup} is longer than the run ({total:,} iterations): the lr would never "
            "reach --lr. Give a shorter ramp or a longer run."
        )
    mean, std = data.normalization()
    model_cfg = cfg.model_config(data.num_classes, data.image_shape[0])
    model = initial_model(cfg, model_cfg)
    if cfg.init_from:
        load_initial_weights(model, Path(cfg.init_from))
    precision = accel.resolve_precision(cfg.precision, device)
    if device.type == "cpu":
        accel.keep_freed_memory()
    warmup = cfg.warmup == "on" or (cfg.warmup == "auto" and cfg.depth >= 110)
    augment = cfg.augment == "on" or (cfg.augment == "auto" and data.augment)
    plan = Plan(
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
        schedule=Schedule.of(cfg, total, warmup),
        augment=augment,
        eval_every=cfg.eval_every or steps_per_epoch,
        compile=accel.resolve_compile(cfg.compile, total, device, group.active),
        # A graph bakes in its lr: a cosine schedule, whose lr changes at every iteration, runs eagerly.
        cuda_graphs=cfg.schedule == "step" and step.resolve(cfg.cuda_graphs, device, group.active),
    )
    return plan, run_config(plan, model_cfg, mean, std)


def initial_model(cfg: TrainConfig, model_cfg) -> torch.nn.Module:
    """The network a run starts from: its seed's He (or PyTorch) init, every block's last BN at
    --block-gamma. The same weights every time, so a run's start can be measured again later."""
    with SEEDING:  # the global generator: cells trained on threads must not draw each other's weights
        torch.manual_seed(cfg.seed)
        model = build_model(model_cfg)
        if cfg.init == "torch":
            model.torch_default_init()
        if cfg.block_gamma != 1.0:
            model.scale_block_gamma(cfg.block_gamma)
    return model


def run_config(plan: Plan, model_cfg, mean: list[float], std: list[float]) -> runs.RunConfig:
    """config.json of a run about to train: the settings, the network, what every choice resolved
    to (the counts measured on the built network), the data."""
    cfg, data, batch_size, group = plan.cfg, plan.data, plan.batch_size, plan.group
    c, h, w = data.image_shape
    return runs.RunConfig(
        train=cfg,
        model=model_cfg,
        resolved=runs.Resolved(
            iterations=plan.total,
            milestones=list(plan.schedule.milestones),
            batch_size=batch_size,
            steps_per_epoch=plan.steps_per_epoch,
            epochs=round(plan.total / plan.steps_per_epoch, 2),
            warmup=plan.schedule.low_lr_start,
            augment=plan.augment,
            augment_pad=default_pad(h) if plan.augment else 0,
            precision=plan.precision,
            eval_every=plan.eval_every,
            compile=plan.compile,
            cuda_graphs=plan.cuda_graphs,
            processes=group.world,
            batch_per_process=batch_size // group.world,
            batchnorm="global batch" if cfg.sync_bn and group.active else "per process",
            normalization={"mean": mean, "std": std},
            **describe(plan.model, (c, h, w)),
        ),
        data=runs.DataInfo(
            name=data.name,
            classes=data.classes,
            image_shape=[c, h, w],
            train_size=len(data.train_y),
            val_size=0 if data.val_y is None else len(data.val_y),
            test_size=len(data.test_y),
            **data.info,
        ),
        environment=accel.environment(plan.device),
    )


def load_initial_weights(model: torch.nn.Module, path: Path) -> None:
    state = checkpoints.load_weights(path, f"--init-from {path}", follow=True)
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
) -> dict:
    """Train one network into the run directory `out`; returns its final metrics row. Under
    torchrun every process calls this; rank 0 alone locks and writes the run directory."""
    out = Path(out)
    if resume and not runs.is_run_dir(out):  # said before any data is loaded or downloaded
        damaged = " (it has a checkpoint but no config.json: it is damaged)" if (out / "checkpoint.pt").exists() else ""
        raise UserError(
            f"--resume: {out} holds no run to resume{damaged}; leave out --resume to start a new run there."
        )
    with distributed.session(cfg.device) as (group, device), contextlib.ExitStack() as stack:
        plan, config = group.together(lambda: setup(cfg, out, data, group, device))

        if cfg.tensorboard and group.main:  # refused before the run directory is claimed
            from reslab.progress import check_tensorboard

            check_tensorboard()

        def start() -> dict | None:
            stack.enter_context(runs.run_lock(out))
            return check_run_dir(config, out, resume)

        done = group.decide(start)  # on rank 0; the other ranks get its answer (or its error)
        if done is not None:
            return done
        if not group.main:  # under torchrun, rank 0 speaks for all
            stack.enter_context(silenced("reslab"))
        return loop(plan, resume, progress if group.main else False)


def check_run_dir(config: runs.RunConfig, out: Path, resume: bool) -> dict | None:
    """Refuse to mix runs; write config.json. Returns the final row if the run is already finished."""
    if runs.is_run_dir(out):
        old = runs.read_config(out)
        changed = differences(asdict(old.train), asdict(config.train))
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


class LoopCounters(schema.Record):
    """A checkpoint's loop state less its running sums (tensors, checked on their own)."""

    iteration: schema.Count
    rows: list[schema.MetricsRow]  # metrics.csv so far
    warmup_until: schema.Count | None  # None: the paper's low-lr start has not ended
    seen: schema.Count  # images
    seconds: schema.NonNegative

    def __post_init__(self):
        """What the counters say of each other: rows in order, none after the checkpoint's
        iteration, the low-lr start ended at an iteration done."""
        if self.warmup_until is not None and self.warmup_until > self.iteration:
            raise ValueError(f"warmup_until {self.warmup_until} is not an iteration done")
        if len(self.rows) > self.iteration or self.rows and self.rows[-1].iteration > self.iteration:
            raise ValueError("the metrics rows are more than one per iteration, or go past the checkpoint's")
        schema.in_order(self.rows)


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

    COUNTERS = tuple(LoopCounters.__struct_fields__)
    SUMS = ("loss_sum", "wrong", "window_wrong", "first_bad")

    @classmethod
    def start(cls, plan: Plan) -> TrainState:
        cfg, dev = plan.cfg, plan.device
        fmt = torch.channels_last if cfg.channels_last else torch.contiguous_format
        if cfg.sync_bn and plan.group.active:
            plan.model = distributed.convert_sync_bn(plan.model, dev)
        plan.model.to(dev, memory_format=fmt)  # type: ignore[call-overload]
        # Every step sets the schedule's lr (step.set_lr) before it updates; the lr given here is
        # only there because torch 2.1 (which reslab supports) requires one.
        opt = torch.optim.SGD(plan.model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
        return cls(
            model=plan.model,
            opt=opt,
            order_gen=torch.Generator().manual_seed(cfg.seed + 1),
            aug_gen=torch.Generator(device=dev).manual_seed(cfg.seed + 2),
            sums=step.Sums.zeros(dev),
            warmup_until=None if plan.schedule.low_lr_start else 0,
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
        sums = {k: loop.pop(k) for k in self.SUMS}
        counters = schema.convert(loop, LoopCounters)  # an unknown entry or a misfit is refused
        if counters.iteration > total:
            raise ValueError(f"iteration {counters.iteration} is outside 0..{total}")
        for k, t in sums.items():
            getattr(self.sums, k).copy_(t)
            if t.is_floating_point() and not bool(torch.isfinite(t).all() and (t >= 0).all()):
                raise ValueError(f"the running sum {k} is not finite and non-negative")
        for k in self.COUNTERS:
            setattr(self, k, loop[k])  # the rows as they were saved: dicts, as training appends them
        self.sums.iteration.fill_(self.iteration)

    def next_batch(self, plan: Plan) -> tuple[torch.Tensor, float, bool, tuple | None]:
        """This iteration's image indices (a new data order at each epoch's start), lr, whether
        the paper's low-lr start is on, and the schedule's phase (a recorded step's key)."""
        pos = self.iteration % plan.steps_per_epoch
        if pos == 0 or self.perm is None:  # (None: resumed mid-epoch, order_gen as the epoch began)
            self.epoch_order_state = self.order_gen.get_state()
            self.perm = torch.randperm(len(plan.data.train_y), generator=self.order_gen).to(plan.device)
        idx = self.perm[pos * plan.batch_size : (pos + 1) * plan.batch_size]
        low = self.warmup_until is None
        return idx, plan.schedule.lr_at(self.iteration, low), low, plan.schedule.phase_key(self.iteration, low)


def make_step(plan: Plan, ts: TrainState) -> step.Eager:
    """The training step of this run: eager, or recorded as CUDA graphs (--cuda-graphs)."""
    net = distributed.wrap(ts.model, plan.group, plan.device)
    if plan.compile:
        net = accel.compiled(net, plan.cfg.compile == "on", plan.device)
    inputs = step.StepInputs(
        net=net,
        opt=ts.opt,
        train_x=plan.data.train_x,
        train_y=plan.data.train_y,
        mean=plan.mean,
        std=plan.std,
        aug_gen=ts.aug_gen if plan.augment else None,
        pad=default_pad(plan.data.image_shape[1]),
        mine=plan.group.shard(plan.batch_size),  # this process's slice of every global batch
        precision=plan.precision,
        memory_format=torch.channels_last if plan.cfg.channels_last else torch.contiguous_format,
    )
    if plan.cuda_graphs:
        return step.Graphed(inputs, ts.sums, plan.batch_size, strict=plan.cfg.cuda_graphs == "on")
    return step.Eager(inputs, ts.sums)


class Journal:
    """What the loop writes into the run directory: metrics, status, checkpoints and the final
    weights. Rank 0 writes; on the other ranks of a torchrun every call does nothing."""

    def __init__(self, plan: Plan):
        self.plan, self.writes = plan, plan.group.main
        self.where = process_info()  # for status.json: a grid's driver shows it, tests kill it

    def status(self, state: str, message: str = "", iteration: int = 0) -> None:
        if self.writes:
            where = self.where if state == "running" else {}
            runs.write_status(self.plan.out, state, message, iteration=iteration, total=self.plan.total, **where)

    def metrics(self, rows: list[dict]) -> None:
        if self.writes:
            runs.write_metrics(self.plan.out, rows)

    def checkpoint(self, ts: TrainState) -> None:
        if self.writes:
            checkpoints.save_checkpoint(self.plan.out, ts.capture(self.plan.steps_per_epoch))

    def period(self, ts: TrainState) -> None:
        """An evaluation's record: the checkpoint first, then the metrics it holds, then the status."""
        self.checkpoint(ts)
        self.metrics(ts.rows)
        self.status("running", iteration=ts.iteration)

    def finished(self, ts: TrainState) -> None:
        if self.writes:
            checkpoints.save_weights(ts.model, self.plan.out / "model.safetensors")
        self.status("finished", f"finished {self.plan.total} iterations", ts.iteration)


def resume_from(plan: Plan, ts: TrainState) -> None:
    """Load the run's checkpoint into ts; rank 0 reads it and hands it to the others (nodes
    need not share a disk)."""
    path = plan.out / "checkpoint.pt"
    main = plan.group.main
    saved = plan.group.from_main(checkpoints.load_checkpoint(path) if main and path.exists() else None)
    if saved is None:
        return
    try:
        ts.restore(saved, plan.total)
    except (KeyError, TypeError, ValueError, RuntimeError, AttributeError) as e:
        raise UserError(
            f"{path} does not fit this run ({one_line(e, 100)}); it is damaged or from another "
            "network. Delete it to restart the run."
        ) from None
    if not main:  # the saved running sums are the totals of all ranks, kept by rank 0
        clear_sums(ts)
    log(f"resuming {plan.out} at iteration {ts.iteration} of {plan.total}")


def loop(plan: Plan, resume: bool, progress: bool | None) -> dict:
    plan.data = plan.data.to(plan.device)  # the images live on the training device for the whole run
    ts = TrainState.start(plan)
    if resume:
        resume_from(plan, ts)
    journal = Journal(plan)
    journal.metrics(ts.rows)  # drops rows a killed process wrote after its last checkpoint
    train_step = make_step(plan, ts)
    if ts.iteration == 0:
        log(plan_text(plan))
    shown = Progress(plan, ts.iteration, progress)
    try:
        journal.status("running", iteration=ts.iteration)
        period_start = time.perf_counter()
        compiling = plan.compile  # the first step of a compiled run compiles it (a minute on a CPU)
        with StopRequest() as asked:
            while ts.iteration < plan.total:
                idx, lr, warming, phase = ts.next_batch(plan)
                with compile_abortable(asked, compiling, plan, ts, journal):
                    train_step(idx, lr, warming, phase)
                compiling = False
                ts.seen += plan.batch_size // plan.group.world
                ts.iteration += 1
                if warming and ts.iteration % ERROR_WINDOW == 0:
                    end_warmup(ts, plan, pool_sums(ts, plan.group)["window_wrong"])
                shown.step()
                if ts.iteration % plan.eval_every == 0 or ts.iteration == plan.total:
                    row = end_period(plan, ts, lr, period_start, journal)
                    ts.rows.append(row)
                    clear_sums(ts, window=False)  # the warm-up window runs on across evaluations
                    journal.period(ts)
                    shown.period(row)
                    period_start = time.perf_counter()
                if stop_requested(asked, plan, ts):
                    interrupt(plan, ts, period_start, journal)
    finally:
        shown.close()
    journal.finished(ts)
    return ts.rows[-1]


def end_period(plan: Plan, ts: TrainState, lr: float, period_start: float, journal: Journal) -> dict:
    """The metrics row of the evaluation period that just ended (training sums of all ranks,
    validation and test scores); stops the run as diverged on a non-finite loss or weight."""
    sums = pool_sums(ts, plan.group)
    train_loss = sums["loss_sum"] / sums["seen"]
    if not math.isfinite(train_loss):
        diverged(plan, ts, journal)
    ips = sums["seen"] / max(1e-9, time.perf_counter() - period_start)
    row = {
        "epoch": round(ts.iteration / plan.steps_per_epoch, 3),
        "iteration": ts.iteration,
        "lr": lr,
        "train_loss": round(train_loss, 6),
        "train_error": round(sums["wrong"] / sums["seen"], 6),
    }
    # Rank 0's BatchNorm running statistics are the model's: the ones evaluated and saved.
    distributed.share_buffers(ts.model, plan.group)
    scoring = dict(precision=plan.precision, channels_last=plan.cfg.channels_last, group=plan.group)
    data = plan.data
    if data.val_y is not None:
        row["val_loss"], row["val_error"] = score(ts.model, data.val_x, data.val_y, plan.mean, plan.std, **scoring)
    row["test_loss"], row["test_error"] = score(ts.model, data.test_x, data.test_y, plan.mean, plan.std, **scoring)
    # A checkpoint is only ever written of weights that are all finite.
    if not (math.isfinite(row["test_loss"]) and finite_weights(ts.model)):
        diverged(plan, ts, journal)
    ts.seconds += time.perf_counter() - period_start
    row.update(seconds=round(ts.seconds, 3), images_per_second=round(ips, 1))
    return {k: round(v, 6) if isinstance(v, float) else v for k, v in row.items()}


def stop_requested(asked: StopRequest, plan: Plan, ts: TrainState) -> bool:
    """Whether to stop now; under torchrun every rank votes at the same iterations, so all stop
    at the same one."""
    wanted = (asked.signal or StopRequest.early) is not None  # early: a worker's cells on threads
    if plan.group.active:
        at_vote = ts.iteration % STOP_VOTE_EVERY == 0 or ts.iteration == plan.total
        wanted = at_vote and plan.group.any(wanted)
    return wanted and ts.iteration < plan.total


def stop(journal: Journal, ts: TrainState, state: str, message: str, error: type[Exception]) -> NoReturn:
    """The one way the loop ends early: the status says why, then `error` is raised (the
    progress bar is closed by the loop on the way out)."""
    journal.status(state, message, ts.iteration)
    raise error(message)


def interrupt(plan: Plan, ts: TrainState, period_start: float, journal: Journal) -> NoReturn:
    """Save a checkpoint and say how to resume."""
    ts.seconds += time.perf_counter() - period_start
    pool_sums(ts, plan.group)
    distributed.share_buffers(ts.model, plan.group)
    journal.checkpoint(ts)
    stop(
        journal,
        ts,
        "interrupted",
        f"interrupted at iteration {ts.iteration} of {plan.total}; checkpoint saved. "
        f"Resume with: reslab train --resume {plan.out}",
        Interrupted,
    )


def diverged(plan: Plan, ts: TrainState, journal: Journal) -> NoReturn:
    first_bad = int(plan.group.first(ts.sums.first_bad).item())
    last = int(ts.rows[-1]["iteration"]) if ts.rows else 0
    kept = f"the last good checkpoint (iteration {last}) is kept" if ts.rows else "no checkpoint had been written yet"
    where = (
        f"the loss became NaN or infinite at iteration {first_bad}"
        if first_bad > 0
        else f"the weights or the test loss became NaN or infinite by iteration {ts.iteration}"
    )
    stop(journal, ts, "diverged", f"training diverged: {where}; {kept}. Lower --lr or turn on --warmup.", Diverged)


@contextlib.contextmanager
def compile_abortable(asked: StopRequest, compiling: bool, plan: Plan, ts: TrainState, journal: Journal):
    """While the first step compiles, a stop ends the run at once (nothing has changed since the
    last checkpoint)."""
    # One process only: under torchrun the ranks must agree on the step they stop at.
    abortable = asked.abortable = compiling and not plan.group.active
    if compiling:  # said only now, once a stop can end the compile at once
        log("compiling the training step (torch.compile): the first iteration takes a minute or so")
    try:
        with quiet_interrupt(abortable):
            yield
    except KeyboardInterrupt:
        if not abortable:
            raise
        stop(
            journal,
            ts,
            "interrupted",
            f"interrupted while compiling the training step, at iteration {ts.iteration} of {plan.total} "
            f"(nothing was lost: the run is as its last checkpoint left it). Resume with: reslab train --resume "
            f"{plan.out}",
            Interrupted,
        )
    finally:
        asked.abortable = False


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


def plan_text(plan: Plan) -> str:
    """What is about to be trained and for how long, said before it starts: the paper's 64k
    iterations are 182 epochs of its 45k-image split, but thousands on a small dataset."""
    epochs = plan.total / plan.steps_per_epoch
    cfg = plan.cfg
    lr = plan.schedule.describe()
    side = plan.data.image_shape[1]
    text = (
        f"{cfg.arch}-{cfg.depth} on {plan.data.name} ({side}x{side}): {plan.total:,} iterations of {plan.batch_size} "
        f"images ({epochs:,.1f} epochs of {len(plan.data.train_y):,} training images), {lr}, evaluated every "
        f"{min(plan.eval_every, plan.total):,} iterations"
    )
    if epochs > 1000 and plan.cfg.iterations is None and plan.cfg.epochs is None and plan.cfg.scale is None:
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


def end_warmup(ts: TrainState, plan: Plan, window_wrong: float) -> None:
    """End the warm-up once the training error over the last window is below the threshold, and
    at the latest at the first lr drop, so that it can never hold the lr at 0.01 for good."""
    err = window_wrong / (ERROR_WINDOW * plan.batch_size)
    ts.sums.window_wrong.zero_()
    if err < plan.cfg.warmup_error or ts.iteration >= min(plan.schedule.milestones, default=plan.total):
        ts.warmup_until = ts.iteration
        log(
            f"the paper's low-lr start ended at iteration {ts.iteration} (training error {err:.1%} over the last "
            f"{ERROR_WINDOW} iterations); lr back to {plan.cfg.lr:g}"
        )


def finite_weights(model: torch.nn.Module) -> bool:
    """Whether every floating-point parameter and buffer is finite (one host read)."""
    checks = [torch.isfinite(t).all() for t in model.state_dict().values() if t.is_floating_point()]
    return bool(torch.stack(checks).all()) if checks else True
