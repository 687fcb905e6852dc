"""Fault injection from outside, through the command line, as a user's machine would see it.

Kills at random moments (SIGKILL, many times, some while a checkpoint is being written),
Ctrl-C, divergence, damaged data files, a checkpoint crafted to run code, HTML in names. Each
scenario checks what the user is promised (exact resume, exit status 2 with a sentence, nothing
half-written, nothing executed) and the summary goes to benchmarks/results/faults.md.

    python benchmarks/faults.py --kills 30
"""

from __future__ import annotations

import argparse
import csv
import gzip
import os
import pickle
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TIMING = {"seconds", "images_per_second"}


def reslab(*args, timeout=600):
    return subprocess.run(
        [sys.executable, "-m", "reslab", *map(str, args)], capture_output=True, text=True, timeout=timeout
    )


def metrics(run_dir: Path) -> list[dict]:
    with open(run_dir / "metrics.csv") as f:
        return [{k: v for k, v in r.items() if k not in TIMING} for r in csv.DictReader(f)]


def weights(run_dir: Path):
    from safetensors.torch import load_file

    return load_file(run_dir / "model.safetensors")


def same_weights(a: Path, b: Path) -> bool:
    import torch

    wa, wb = weights(a), weights(b)
    return wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


TRAIN = [
    "train",
    "--arch",
    "resnet",
    "--depth",
    "14",
    "--dataset",
    "digits",
    "--iterations",
    "1200",
    "--eval-every",
    "5",
    "--batch-size",
    "64",
    "--precision",
    "fp32",
    "--augment",
    "on",
    "--no-progress",
]


def kill_on_write(proc, out: Path, deadline: float) -> bool:
    """Poll the run directory and SIGKILL the moment a temporary file (a checkpoint or metrics
    write in progress) appears; True if one was caught."""
    while time.time() < deadline and proc.poll() is None:
        if out.exists() and any(p.name.endswith(".tmp") for p in out.iterdir()):
            proc.send_signal(signal.SIGKILL)
            return True
        time.sleep(0.0005)
    return False


def random_kills(tmp: Path, kills: int, seed: int) -> dict:
    """SIGKILL a training run again and again until `kills` kills have landed (every other one
    the moment a checkpoint or metrics file is being written), let it finish, and compare it
    with an uninterrupted run."""
    import torch

    rnd = random.Random(seed)
    ref = reslab(*TRAIN, "--out", tmp / "ref")
    assert ref.returncode == 0, ref.stderr
    out = tmp / "killed"
    n_kills = mid_write = 0
    while True:
        proc = subprocess.Popen(
            [sys.executable, "-m", "reslab", *TRAIN, "--out", str(out), "--resume"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        if n_kills < kills:
            if n_kills % 2:
                caught = kill_on_write(proc, out, time.time() + rnd.uniform(2.0, 5.0))
            else:
                time.sleep(rnd.uniform(1.0, 4.0))  # python + torch start in ~1.5 s here
                caught = False
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
            proc.communicate()
            if proc.returncode == -signal.SIGKILL:
                n_kills += 1
                mid_write += caught and any(p.name.endswith(".tmp") for p in out.iterdir())
                if (out / "checkpoint.pt").exists():  # what a kill leaves must always load
                    torch.load(out / "checkpoint.pt", weights_only=True)
                continue
            if proc.returncode == 0:
                break
        _, err = proc.communicate()
        if proc.returncode == 0:
            break
        raise AssertionError(f"resumed run failed: {err}")
    leftovers = [p.name for p in out.iterdir() if p.name.endswith(".tmp")]
    return {
        "kills": n_kills,
        "kills while a file was being written": mid_write,
        "metrics_equal": metrics(out) == metrics(tmp / "ref"),
        "weights_equal": same_weights(out, tmp / "ref"),
        "leftover_temp_files_after_finish": leftovers,
    }


def ctrl_c(tmp: Path) -> dict:
    out = tmp / "ctrlc"
    proc = subprocess.Popen(
        [sys.executable, "-m", "reslab", *TRAIN, "--out", str(out)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    while not (out / "metrics.csv").exists() or len((out / "metrics.csv").read_text().splitlines()) < 3:
        time.sleep(0.05)  # interrupt in the middle of training, after a few evaluations
    t = time.perf_counter()
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate()
    stopped_in = time.perf_counter() - t
    resumed = reslab(*TRAIN, "--out", out, "--resume")
    return {
        "exit_status": proc.returncode,
        "stopped_in_seconds": round(stopped_in, 2),
        "says_how_to_resume": "--resume" in err,
        "resumed_ok": resumed.returncode == 0,
        "equal_to_uninterrupted": metrics(out) == metrics(tmp / "ref") and same_weights(out, tmp / "ref"),
    }


def expect_user_error(result, *phrases) -> dict:
    return {
        "exit_status": result.returncode,
        "no_traceback": "Traceback" not in result.stderr,
        "message": result.stderr.strip().splitlines()[-1][:220] if result.stderr.strip() else "",
        "ok": result.returncode == 2 and "Traceback" not in result.stderr and all(p in result.stderr for p in phrases),
    }


def bad_data(tmp: Path) -> dict:
    import numpy as np

    out = {}
    # truncated and corrupt CIFAR pickle batches
    folder = tmp / "cifar" / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        with open(folder / name, "wb") as f:
            pickle.dump({b"data": np.zeros((4, 3072), np.uint8), b"labels": [0, 1, 2, 3]}, f)
    raw = (folder / "data_batch_2").read_bytes()
    (folder / "data_batch_2").write_bytes(raw[: len(raw) // 3])
    train = ["train", "--depth", "8", "--iterations", "2", "--no-progress"]
    out["truncated CIFAR batch"] = expect_user_error(
        reslab(*train, "--dataset", "cifar10", "--data-dir", tmp / "cifar", "--out", tmp / "r1"), "data_batch_2"
    )
    with open(folder / "data_batch_2", "wb") as f:
        pickle.dump({b"data": np.zeros((4, 1000), np.uint8), b"labels": [0, 1, 2, 3]}, f)
    out["wrong image shape in a CIFAR batch"] = expect_user_error(
        reslab(*train, "--dataset", "cifar10", "--data-dir", tmp / "cifar", "--out", tmp / "r2"), "3072"
    )
    with open(folder / "data_batch_2", "wb") as f:
        pickle.dump({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 99]}, f)
    out["label out of range"] = expect_user_error(
        reslab(*train, "--dataset", "cifar10", "--data-dir", tmp / "cifar", "--out", tmp / "r3"), "labels must lie"
    )
    # truncated gzipped IDX
    idx = tmp / "idx" / "mnist"
    idx.mkdir(parents=True)
    for stem, shape in (
        ("train-images-idx3-ubyte", (4, 28, 28)),
        ("train-labels-idx1-ubyte", (4,)),
        ("t10k-images-idx3-ubyte", (2, 28, 28)),
        ("t10k-labels-idx1-ubyte", (2,)),
    ):
        header = bytes([0, 0, 8, len(shape)]) + b"".join(n.to_bytes(4, "big") for n in shape)
        (idx / f"{stem}.gz").write_bytes(gzip.compress(header + bytes(int(np.prod(shape))))[:-12])
    out["truncated gzipped IDX"] = expect_user_error(
        reslab(*train, "--dataset", "mnist", "--data-dir", tmp / "idx", "--no-download", "--out", tmp / "r4"), "idx"
    )
    # image folder: a corrupt image, then an empty class folder
    from PIL import Image

    imgs = tmp / "imgs"
    for split in ("train", "test"):
        for cls in ("a", "b"):
            (imgs / split / cls).mkdir(parents=True)
            Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(imgs / split / cls / "0.png")
    (imgs / "train" / "b" / "1.png").write_bytes(b"\x89PNG not really")
    out["corrupt image"] = expect_user_error(
        reslab(*train, "--dataset", f"imagefolder:{imgs}", "--out", tmp / "r5"), "1.png"
    )
    out["corrupt image"]["no cache written"] = not (tmp / ".imgs.reslab-cache.npz").exists()
    (imgs / "train" / "b" / "1.png").unlink()
    (imgs / "test" / "b" / "0.png").unlink()
    out["empty class folder"] = expect_user_error(
        reslab(*train, "--dataset", f"imagefolder:{imgs}", "--out", tmp / "r6"), "holds no images"
    )
    return out


def untrusted(tmp: Path) -> dict:
    out = {}
    run = tmp / "ref"
    marker = tmp / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    with open(run / "checkpoint.pt", "wb") as f:
        pickle.dump({"model": Evil()}, f)
    (run / "status.json").write_text('{"state": "interrupted", "message": ""}')
    r = reslab(*TRAIN, "--out", run, "--resume")
    out["checkpoint crafted to run code"] = {
        **expect_user_error(r, "cannot be loaded safely"),
        "code_not_run": not marker.exists(),
    }
    r = reslab("import", run / "checkpoint.pt", "--out", tmp / "imported")
    out["import of that file"] = {
        **expect_user_error(r, "cannot be loaded safely"),
        "code_not_run": not marker.exists(),
    }
    # HTML in class names and messages reaches the report only as text
    import json

    config = json.loads((run / "config.json").read_text())
    config["data"]["classes"][0] = "<script>alert('x')</script>"
    (run / "config.json").write_text(json.dumps(config))
    (run / "status.json").write_text(json.dumps({"state": "failed", "message": "<img src=x onerror=alert(1)>"}))
    r = reslab("report", tmp)
    html = (tmp / "report.html").read_text() if (tmp / "report.html").exists() else ""
    out["HTML in names and messages"] = {
        "exit_status": r.returncode,
        "ok": r.returncode == 0 and "<img src=x" not in html and "&lt;img src=x onerror=alert(1)&gt;" in html,
    }
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--kills", type=int, default=30)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--results", type=Path, default=ROOT / "benchmarks" / "results" / "faults.md")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        kills = random_kills(tmp, args.kills, args.seed)
        results = {"SIGKILL at random moments": kills, "Ctrl-C": ctrl_c(tmp), **bad_data(tmp), **untrusted(tmp)}
    lines = [
        "# Faults injected and survived",
        "",
        f"Command: `python benchmarks/faults.py --kills {args.kills}`",
        "",
        f"Training run under test: `reslab {' '.join(TRAIN)}` (checkpoint every 5 iterations).",
        "",
        "| fault | result |",
        "|---|---|",
    ]
    for name, r in results.items():
        lines.append(f"| {name} | {', '.join(f'{k}: {v}' for k, v in r.items())} |")
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    ok = (
        kills["metrics_equal"]
        and kills["weights_equal"]
        and all(r.get("ok", True) and r.get("code_not_run", True) for r in results.values())
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
