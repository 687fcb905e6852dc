"""The demo's recipe: plain and residual nets of two depths, sized for a minute on a CPU, then the
first two analyses (responses, the constructed solution)."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

from reslab.config import TrainConfig

# The demo's settings on top of the user's (the same for every net, plain and residual alike).
# The paper's warm-up (lr 0.01 until training error < 80%): a demo run has few iterations per
# epoch, and a 56-layer net started at lr 0.1 can blow up in its first steps on some seeds.
RECIPE: dict = dict(warmup="on")
EPOCHS = 15


def demo(
    asked: TrainConfig,
    out: Path,
    archs: str,
    depths: list[int],
    seeds: int,
    backend=None,
    overwrite=False,
    first_seed: int = 0,
) -> int:
    """plain and ResNet at each depth on `asked.dataset`, sized to take about a minute on a CPU:
    15 epochs of digits (165 iterations), or 15 of a 5,000-image subset of real images on a CPU."""
    from reslab.accel import resolve_device
    from reslab.experiment import finish, run_grid, split_archs

    on_cpu = resolve_device(asked.device).type == "cpu"
    digits = asked.dataset == "digits"
    subset = asked.subset or (None if digits or not on_cpu else 5000)
    # 15 epochs of digits: ResNet-56 is below 1% training error by about iteration 110 on seeds
    # 0-4 while plain-56 is still above 40%, so every verdict is settled (benchmarks/results/demo_seeds.md).
    epochs = asked.epochs or EPOCHS
    base = dataclasses.replace(asked, subset=subset, epochs=epochs, **RECIPE)
    t0 = time.perf_counter()
    spec = {"kind": "demo", "dataset": asked.dataset, "epochs": epochs, "subset": subset}
    arch_list = split_archs(archs)
    seed_list = list(range(first_seed, first_seed + seeds))
    outcomes = run_grid(out, base, arch_list, depths, seed_list, spec, backend, overwrite)
    demo_analyses(out, arch_list, depths, first_seed)
    code = finish(out, outcomes)
    print(f"demo finished in {time.perf_counter() - t0:.0f} s")
    return code


def demo_analyses(out: Path, archs: list[str], depths: list[int], seed: int = 0) -> None:
    """The why, in seconds: layer responses of every net, and the constructed solution from the
    shallowest to the deepest net of each architecture, compared with SGD's."""
    from reslab import runs
    from reslab.analysis import construct, responses
    from reslab.verdicts import mark

    # This experiment's runs only (its cells, one recipe), never others left in the folder.
    finished = [r.dir for r in runs.gather(out)[0] if r.state == "finished" and (r.dir / "model.safetensors").exists()]
    if not finished:
        return
    r = responses.analyze(finished, out)
    for f in r["findings"]:
        print(f"[{mark(f['holds'], f.get('testable', True))}] {f['claim']}: {f['text']}")
    lo, hi = min(depths), max(depths)
    for arch in archs:
        source = out / f"{arch}-{lo}-seed{seed}"
        if hi > lo and source in finished:
            c = construct.analyze(source, hi, out)
            scratch = f"; SGD from scratch reached {c['scratch_train_error']:.1%}" if "scratch" in c else ""
            print(
                f"constructed {arch}-{hi} from {arch}-{lo}: {construct.outputs_text(c)}, "
                f"training error {c['constructed_train_error']:.1%}{scratch} (in eval mode on the training "
                "images; the table's training error is the running error of the last epoch's batches)"
            )
