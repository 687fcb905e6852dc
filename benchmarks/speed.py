"""Training speed, side by side in one run: bare step, reslab's loop, a conventional loop.

For each network (batch 128, 3x32x32 inputs, CIFAR-sized data held in memory):
  bare      forward + backward + SGD step on one fixed batch, fp32 (the ceiling for any loop)
  bare-bf16 the same under bf16 autocast (reslab's CPU default where the CPU has native bf16)
  reslab    reslab.train.train(): data order, augmentation on the batch, metrics, schedule,
            evaluation and checkpoint cadence, in its default precision and in fp32
  conventional  a Dataset with per-sample transforms, a DataLoader, fp32, eval every epoch
Also the machine's measured matrix-multiply rate (a large torch.mm) as the practical FLOP ceiling;
a training image costs about 3 x 2 x MACs FLOPs.

    python benchmarks/speed.py                          # ResNet-20/56/110 and plain-56
    python benchmarks/speed.py --nets resnet-20 --steps 20
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from reslab.data import make_synthetic
from reslab.models import ModelConfig, build_model, count_macs
from reslab.train import TrainConfig, resolve_precision, train

ROOT = Path(__file__).resolve().parents[1]
BATCH = 128


def matmul_rate(dtype=torch.float32, n=2048, reps=10) -> float:
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    torch.mm(a, b)
    t = time.perf_counter()
    for _ in range(reps):
        torch.mm(a, b)
    return 2 * n**3 * reps / (time.perf_counter() - t)


def bare_step(arch, depth, steps, precision) -> float:
    torch.manual_seed(0)
    cl = precision == "bf16"
    model = build_model(ModelConfig(arch, depth))
    if cl:
        model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    x = torch.randn(BATCH, 3, 32, 32)
    if cl:
        x = x.contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (BATCH,))

    def step():
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
            out = model(x)
        loss = F.cross_entropy(out.float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(3):
        step()
    t = time.perf_counter()
    for _ in range(steps):
        step()
    return steps * BATCH / (time.perf_counter() - t)


def reslab_loop(arch, depth, steps, precision, data) -> float:
    """Images/s of the whole run (training, one evaluation of the 1,000 test images every
    epoch and a checkpoint with it), measured from the outside."""
    with tempfile.TemporaryDirectory() as tmp:
        cfg = TrainConfig(
            arch=arch,
            depth=depth,
            dataset="synthetic",
            iterations=steps + 3,
            precision=precision,
            augment="on",
            device="cpu",
            eval_every=steps + 3,
        )
        warm = TrainConfig(**{**cfg.__dict__, "iterations": 3})
        train(warm, Path(tmp) / "warm", data=data, progress=False, log=None)
        t = time.perf_counter()
        train(cfg, Path(tmp) / "run", data=data, progress=False, log=None)
        elapsed = time.perf_counter() - t
    return (steps + 3) * BATCH / elapsed


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


def conventional_loop(arch, depth, steps, data) -> float:
    torch.manual_seed(0)
    model = build_model(ModelConfig(arch, depth))
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    mean, std = data.normalization()
    train_loader = torch.utils.data.DataLoader(
        PerSampleDataset(data.train_x, data.train_y, mean, std, True), batch_size=BATCH, shuffle=True, drop_last=True
    )
    test_loader = torch.utils.data.DataLoader(
        PerSampleDataset(data.test_x, data.test_y, mean, std, False), batch_size=BATCH
    )
    done, t = 0, None
    while done < steps + 3:
        model.train()
        for x, y in train_loader:
            if done == 3:
                t = time.perf_counter()
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            done += 1
            if done == steps + 3:
                break
        model.eval()  # eval every epoch, as such loops do
        with torch.no_grad():
            for x, _ in test_loader:
                model(x)
    return steps * BATCH / (time.perf_counter() - t)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--nets", default="resnet-20,plain-56,resnet-56,resnet-110")
    p.add_argument("--steps", type=int, default=30, help="timed training steps per measurement")
    p.add_argument("--results", type=Path, default=ROOT / "benchmarks" / "results" / "speed_cpu")
    args = p.parse_args()
    # 30 steps of batch 128 plus 1,000 test images: an epoch of 3,840 training images.
    data = make_synthetic(BATCH * args.steps, 1000, (3, 32, 32))
    default = resolve_precision("auto", torch.device("cpu"))
    mm32, mm16 = matmul_rate(torch.float32), matmul_rate(torch.bfloat16)
    rows = []
    for net in args.nets.split(","):
        arch, depth = net.split("-")
        depth = int(depth)
        macs = count_macs(build_model(ModelConfig(arch, depth)))
        r = {
            "net": net,
            "macs": macs,
            "bare_fp32": bare_step(arch, depth, args.steps, "fp32"),
            "bare_bf16": bare_step(arch, depth, args.steps, "bf16"),
            "reslab_default": reslab_loop(arch, depth, args.steps, "auto", data),
            "reslab_fp32": reslab_loop(arch, depth, args.steps, "fp32", data),
            "conventional": conventional_loop(arch, depth, args.steps, data),
        }
        r["gflops_reslab"] = r["reslab_default"] * 6 * macs / 1e9
        rows.append(r)
        print(f"{net}: done", file=sys.stderr)
    head = (
        f"| net | bare fp32 | bare {default} | reslab {default} | reslab fp32 | conventional | reslab/conventional"
        f" | reslab/bare ({default}) | GFLOP/s (reslab) | of mm ceiling |"
    )
    lines = [head, "|" + "---|" * 10]
    for r in rows:
        bare_same = r["bare_bf16"] if default == "bf16" else r["bare_fp32"]
        ceiling = mm16 if default == "bf16" else mm32
        speedup = r["reslab_default"] / r["conventional"]
        lines.append(
            f"| {r['net']} | {r['bare_fp32']:.0f} | {bare_same:.0f} | {r['reslab_default']:.0f} | "
            f"{r['reslab_fp32']:.0f} | {r['conventional']:.0f} | {speedup:.2f}x"
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
            "All numbers from one run, side by side; the machine is shared, so compare ratios, not absolute rates. "
            "reslab's loop includes augmentation, metrics, the lr schedule, one evaluation of 1,000 test images and "
            f"a checkpoint per {args.steps + 3} steps; the conventional loop evaluates the same test images every "
            "epoch.",
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
