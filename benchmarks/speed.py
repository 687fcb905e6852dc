"""Training speed, side by side in one run: bare step, reslab's loop, a conventional loop.

For each network (batch 128, 3x32x32 inputs, CIFAR-sized data held in memory):
  bare      forward + backward + SGD step on one fixed batch, fp32 (the ceiling for any loop)
  bare-bf16 the same under bf16 autocast (reslab's CPU default where the CPU has native bf16),
            eager and through torch.compile
  reslab    reslab.train.train(): data order, augmentation on the batch, metrics, schedule,
            evaluation and checkpoint cadence, in its default precision and in fp32, compiled
            as a paper-length run would be
  conventional  a Dataset with per-sample transforms, a DataLoader, fp32, eval every epoch
Also the machine's measured matrix-multiply rate (a large torch.mm) as the practical FLOP ceiling;
a training image costs about 3 x 2 x MACs FLOPs.

    python benchmarks/speed.py                          # ResNet-20/56/110 and plain-56
    python benchmarks/speed.py --nets resnet-20 --steps 20 --rounds 1
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from fused_speed import BATCH, rate, single_step, sync

from reslab import accel
from reslab.accel import resolve_precision
from reslab.config import TrainConfig
from reslab.data import make_synthetic
from reslab.errors import UserError
from reslab.models import ModelConfig, build_model, count_macs, parse_net
from reslab.train import train

ROOT = Path(__file__).resolve().parents[1]
# What compile=auto resolves to for a paper-length run on this machine.
LONG_RUN_COMPILE = "on" if accel.resolve_compile("auto", 64000, torch.device("cpu"), False) else "off"


def matmul_rate(dtype=torch.float32, n=2048, reps=10) -> float:
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    torch.mm(a, b)
    t = time.perf_counter()
    for _ in range(reps):
        torch.mm(a, b)
    return 2 * n**3 * reps / (time.perf_counter() - t)


def bare_step(arch, depth, steps, precision, compile_step=False) -> float:
    """Forward + backward + SGD step on one fixed batch, with reslab's host settings (channels_last
    where reslab uses it here, i.e. with bf16; the fp32 reference in the plain layout)."""
    accel.keep_freed_memory()
    torch.manual_seed(0)
    cpu = torch.device("cpu")
    mode = "default" if compile_step else None
    step = single_step(ModelConfig(arch, depth), cpu, precision, mode, channels_last=precision == "bf16")
    return rate(step, cpu, BATCH, steps)


def reslab_loop(arch, depth, steps, precision, data) -> float:
    """Images/s of epochs 2 and 3 of a 3-epoch run (an epoch = `steps` steps, each ending with an
    evaluation of the 1,000 test images and a checkpoint), timed from the outside between the
    first and the last evaluation report; epoch 1 holds the one-off start (and compilation)."""
    stamps = []
    with tempfile.TemporaryDirectory() as tmp:
        cfg = TrainConfig(
            arch=arch,
            depth=depth,
            dataset="synthetic",
            epochs=3,
            precision=precision,
            augment="on",
            device="cpu",
            compile=LONG_RUN_COMPILE,
        )
        # Only the evaluation lines count (not, say, the line announcing compilation).
        handler = Stamps(stamps)
        logger = logging.getLogger("reslab.progress")
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        try:
            train(cfg, Path(tmp) / "run", data=data, progress=False)
        finally:
            logger.removeHandler(handler)
    return 2 * steps * BATCH / (stamps[2] - stamps[0])


class Stamps(logging.Handler):
    """The time of each evaluation line the training loop logs."""

    def __init__(self, stamps: list[float]):
        super().__init__()
        self.stamps = stamps

    def emit(self, record: logging.LogRecord) -> None:
        if " epoch " in record.getMessage():
            self.stamps.append(time.perf_counter())


class PerSampleDataset(torch.utils.data.Dataset):
    """What a typical hand-written CIFAR loop does: one image at a time, pad-crop-flip and
    normalise in __getitem__ (torchvision-style transforms, written with torch ops)."""

    def __init__(self, x, y, mean, std, train):
        self.x, self.y, self.train = x, y, train
        self.mean, self.std = torch.tensor(mean).view(-1, 1, 1), torch.tensor(std).view(-1, 1, 1)

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        img = self.x[i].float() / 255
        if self.train:
            img = F.pad(img, (4, 4, 4, 4))
            dy, dx = torch.randint(0, 9, (2,)).tolist()
            img = img[:, dy : dy + 32, dx : dx + 32]
            if torch.rand(()) < 0.5:
                img = img.flip(-1)
        return ((img - self.mean) / self.std).contiguous(), self.y[i]


def conventional_loop(arch, depth, data, device=torch.device("cpu"), epochs=3, workers=0) -> float:
    """Seconds per training iteration over epochs 2..`epochs` (epoch 1 holds the one-off start),
    each epoch a pass over the training set ending with an evaluation of the test set, its
    samples prepared in `workers` DataLoader workers (0: in this process). On a GPU it is written
    as such loops are for one: pinned memory, batches copied over, cuDNN's autotuner on."""
    torch.manual_seed(0)
    model = build_model(ModelConfig(arch, depth)).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    mean, std = data.normalization()
    gpu = device.type == "cuda"
    loader = dict(batch_size=BATCH, num_workers=workers, pin_memory=gpu, persistent_workers=workers > 0)
    train_loader = torch.utils.data.DataLoader(
        PerSampleDataset(data.train_x, data.train_y, mean, std, True), shuffle=True, drop_last=True, **loader
    )
    test_loader = torch.utils.data.DataLoader(PerSampleDataset(data.test_x, data.test_y, mean, std, False), **loader)
    stamps = []
    autotuner = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = gpu
    try:
        for _ in range(epochs):
            stamps.append(conventional_epoch(model, opt, train_loader, test_loader, device))
    finally:  # the caller's setting again (gpu_check measures other loops after this one)
        torch.backends.cudnn.benchmark = autotuner
    return (stamps[-1] - stamps[0]) / ((epochs - 1) * len(train_loader))


def conventional_epoch(model, opt, train_loader, test_loader, device) -> float:
    """One epoch of the conventional loop, ending with the test set; returns when it ended."""
    model.train()
    running_loss = 0.0
    for x, y in train_loader:
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        running_loss += loss.item()  # the usual running loss for the progress line
    model.eval()  # eval every epoch, as such loops do
    with torch.no_grad():
        for x, _ in test_loader:
            model(x.to(device, non_blocking=True))
    sync(device)
    return time.perf_counter()


KINDS = {
    "bare_fp32": lambda a, d, n, data: bare_step(a, d, n, "fp32"),
    "bare_bf16": lambda a, d, n, data: bare_step(a, d, n, "bf16"),
    "bare_bf16_compiled": lambda a, d, n, data: bare_step(a, d, n, "bf16", compile_step=True),
    "reslab_default": lambda a, d, n, data: reslab_loop(a, d, n, "auto", data),
    "reslab_fp32": lambda a, d, n, data: reslab_loop(a, d, n, "fp32", data),
    "conventional": lambda a, d, n, data: BATCH / conventional_loop(a, d, data),
}


def measure_one(kind: str, net: str, steps: int) -> float:
    """One measurement in this process (the driver starts a fresh process for each)."""
    config = parse_net(net)
    # `steps` steps of batch 128 per epoch, plus 1,000 test images.
    data = make_synthetic(BATCH * steps, 1000, (3, 32, 32))
    return KINDS[kind](config.arch, config.depth, steps, data)


def measure(kind: str, net: str, steps: int) -> float:
    # A fresh process for every measurement: reslab's allocator setting (accel.keep_freed_memory)
    # stays out of the conventional loop, and no run inherits another's caches.
    cmd = [sys.executable, __file__, "--one", kind, net, "--steps", str(steps)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return float(out.strip().splitlines()[-1])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--nets", default="resnet-20,plain-56,resnet-56,resnet-110")
    p.add_argument("--steps", type=int, default=30, help="timed training steps per measurement")
    p.add_argument("--rounds", type=int, default=2, help="measure everything this many times; keep the best")
    p.add_argument("--results", type=Path, default=ROOT / "benchmarks" / "results" / "speed_cpu")
    p.add_argument("--one", nargs=2, metavar=("KIND", "NET"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.one:
        print(measure_one(*args.one, args.steps))
        return 0
    nets = args.nets.split(",")
    try:
        for net in nets:
            parse_net(net)
    except UserError as e:
        print(f"speed: {e}", file=sys.stderr)
        return 2
    default = resolve_precision("auto", torch.device("cpu"))
    mm32, mm16 = matmul_rate(torch.float32), matmul_rate(torch.bfloat16)
    best = {(net, kind): 0.0 for net in nets for kind in KINDS}
    for rnd in range(args.rounds):  # rounds interleave, so a slow spell of the machine hits all alike
        for net in nets:
            for kind in KINDS:
                best[net, kind] = max(best[net, kind], measure(kind, net, args.steps))
            print(f"round {rnd + 1}: {net} done", file=sys.stderr)
    rows = []
    for net in nets:
        r = {"net": net, "macs": count_macs(build_model(parse_net(net)))}
        r.update({kind: best[net, kind] for kind in KINDS})
        r["gflops_reslab"] = r["reslab_default"] * 6 * r["macs"] / 1e9
        rows.append(r)
    tag = f"{default}{' compiled' if LONG_RUN_COMPILE == 'on' else ''}"
    head = (
        f"| net | bare fp32 | bare bf16 | bare bf16 compiled | reslab ({tag}) | reslab fp32 | conventional "
        f"| reslab/conventional | reslab/bare ({tag}) | GFLOP/s (reslab) | of mm ceiling |"
    )
    lines = [head, "|" + "---|" * 11]
    for r in rows:
        # The bare step in reslab's precision (compiled too where reslab compiles): the loop's ceiling.
        bf16_bare = "bare_bf16_compiled" if LONG_RUN_COMPILE == "on" else "bare_bf16"
        bare_same = r["bare_fp32" if default == "fp32" else bf16_bare]
        ceiling = mm16 if default == "bf16" else mm32
        speedup = r["reslab_default"] / r["conventional"]
        lines.append(
            f"| {r['net']} | {r['bare_fp32']:.0f} | {r['bare_bf16']:.0f} | {r['bare_bf16_compiled']:.0f} | "
            f"{r['reslab_default']:.0f} | {r['reslab_fp32']:.0f} | {r['conventional']:.0f} | {speedup:.2f}x"
            f" | {r['reslab_default'] / bare_same:.2f}x | {r['gflops_reslab']:.0f} | "
            f"{100 * r['gflops_reslab'] * 1e9 / ceiling:.0f}% |"
        )
    command = "python benchmarks/speed.py " + " ".join(sys.argv[1:])
    text = "\n".join(
        [
            "# Training speed on CPU (images/s, batch 128, 3x32x32)",
            "",
            f"Command: `{command.strip()}`",
            "",
            f"Machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, torch "
            f"{torch.__version__}; reslab's default precision here: {default}. Large torch.mm: "
            f"{mm32 / 1e9:.0f} GFLOP/s fp32, {mm16 / 1e9:.0f} GFLOP/s bf16.",
            "",
            *lines,
            "",
            f"All numbers from one run, side by side, each the best of {args.rounds} measurements in fresh "
            "processes (the rounds interleave); the machine is shared, so compare ratios, not absolute rates. "
            f"Both loops are timed over epochs 2-3 of a 3-epoch run ({args.steps} steps of batch 128 per epoch), "
            "each epoch ending with an evaluation of 1,000 test images (reslab also writes a checkpoint and its "
            "metrics); reslab's loop includes augmentation, metrics and the lr schedule. reslab runs as it would "
            f"for a paper-length run of 64k iterations: {default}, compile {LONG_RUN_COMPILE} "
            "(compilation falls in the untimed first epoch). The bare steps use reslab's allocator setting, "
            "the conventional loop runs in a plain process.",
            "",
        ]
    )
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.with_suffix(".md").write_text(text)
    args.results.with_suffix(".json").write_text(
        json.dumps({"command": command, "rows": rows, "matmul_fp32": mm32, "matmul_bf16": mm16}, indent=2) + "\n"
    )
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
