"""`reslab analyze ...`: each analysis on run directories, its results written as
OUT/analyses/NAME.json and OUT/figures/NAME.png|svg, which the report turns into a section."""

from __future__ import annotations

import math
import time
from pathlib import Path

import torch

from reslab import plots
from reslab.analysis import construct, gradients, identity, landscape, lesion, responses
from reslab.analysis.common import error_rate, load_split, output_dir, predict, progress_bar, write_result
from reslab.errors import UserError
from reslab.models import ARCHS, ModelConfig, build_model


def run_responses(run_dirs: list[Path], out=None, split="test", limit=None, dataset=None, data_dir=None) -> dict:
    results = []
    for d in run_dirs:
        run = load_split(d, split, limit, dataset, data_dir)
        results.append(
            {
                "run": run.dir.name,
                "label": run.label,
                "arch": run.arch,
                "depth": run.depth,
                "layers": responses.layer_responses(run.model, run.x),
            }
        )
    out = output_dir(run_dirs, out)
    result = {
        "split": split,
        "images": len(run.y),
        "runs": results,
        "findings": responses.findings(results, "std"),
        "findings_per_channel": responses.findings(results, "std_per_channel"),
    }
    write_result(out, "responses", result)
    plots.layer_responses(results, out / "figures" / "responses")
    return result


def run_construct(
    source: Path, depth: int, out=None, compare: Path | None = None, limit=None, dataset=None, data_dir=None
) -> dict:
    """Build the deeper identity-extended net, check it equals the source, and compare its
    training error with what SGD reached from scratch at that depth."""
    src = load_split(source, "train", limit, dataset, data_dir)
    if src.arch not in ARCHS:
        raise UserError(f"cannot construct from a '{src.arch}' network.")
    deep, added = construct.construct_deeper(src.model, depth, seed=src.config["train"].get("seed", 0))
    shallow_logits, deep_logits = predict(src.model, src.x), predict(deep, src.x)
    result = {
        "source": src.dir.name,
        "source_label": src.label,
        "arch": src.arch,
        "from_depth": src.depth,
        "depth": depth,
        "identity_blocks": len(added),
        "images": len(src.y),
        "max_abs_difference": (deep_logits - shallow_logits).abs().max().item(),
        "same_predictions": bool((deep_logits.argmax(1) == shallow_logits.argmax(1)).all()),
        "source_train_error": (shallow_logits.argmax(1) != src.y).float().mean().item(),
        "constructed_train_error": (deep_logits.argmax(1) != src.y).float().mean().item(),
    }
    scratch = compare or find_sibling(source, src.arch, depth)
    if scratch is not None:
        other = load_split(scratch, "train", limit, dataset, data_dir)
        result["scratch"] = other.dir.name
        result["scratch_train_error"] = error_rate(other.model, other.x, other.y)
    out = output_dir([source], out)
    # Under analyses/, not beside the trained runs: it is not a run of the experiment's grid.
    save_constructed(
        deep, src.config, out / "analyses" / "constructed" / f"{src.arch}-{depth}-from-{src.depth}", result
    )
    results = read_list(out, "construct") or []
    results = [r for r in results if (r["source"], r["depth"]) != (result["source"], depth)] + [result]
    write_result(out, "construct", {"results": results})
    return result


def find_sibling(source: Path, arch: str, depth: int) -> Path | None:
    """A run of the same arch at `depth` (same seed preferred) next to `source`, trained by SGD."""
    from reslab import runs

    seed = runs.read_json(Path(source) / "config.json")["train"].get("seed", 0)
    candidates = [
        Path(source).parent / f"{arch}-{depth}-seed{seed}",
        *sorted(Path(source).parent.glob(f"{arch}-{depth}-seed*")),
    ]
    return next((c for c in candidates if (c / "model.safetensors").exists()), None)


def save_constructed(model, source_config: dict, out: Path, result: dict) -> None:
    """The constructed net as a run directory, so it can be evaluated, analysed or trained on
    (reslab train --init-from OUT/model.safetensors)."""
    from reslab import runs
    from reslab.train import save_weights

    config = {
        **source_config,
        "model": model.config.to_dict(),
        "train": {**source_config["train"], "depth": model.config.depth},
        "resolved": {**source_config["resolved"], "parameters": sum(p.numel() for p in model.parameters())},
        "constructed": {k: result[k] for k in ("source", "from_depth", "depth", "identity_blocks")},
    }
    out.mkdir(parents=True, exist_ok=True)
    save_weights(model, out / "model.safetensors")
    runs.write_json(out / "config.json", config)
    runs.write_metrics(out, [])
    runs.write_status(
        out, "finished", f"constructed from {result['source']} with {result['identity_blocks']} identity blocks"
    )


def read_list(out: Path, name: str):
    from reslab.analysis.common import read_result

    r = read_result(out, name)
    return r["results"] if r else None


def run_identity(out: Path, max_k: int = 10, steps: int = 400, seed: int = 0, log=print) -> dict:
    """k = 1..max_k residual blocks against 2k plain layers: the same number of 3x3 convs."""
    rows = {"plain": [], "residual": []}
    bar = progress_bar(4 * sum(range(1, max_k + 1)), "identity (convs trained)")  # a stack's cost grows with k
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tensors this small run slower on several threads, far slower on busy cores
    try:
        for k in range(1, max_k + 1):
            for kind, units in (("plain", 2 * k), ("residual", k)):
                err = identity.identity_error(kind, units, steps=steps, seed=seed)
                rows[kind].append({"k": units, "convs": 2 * k, "error": err})
                bar.update(2 * k)
            log(f"{2 * k} convs: plain {rows['plain'][-1]['error']:.4f}, residual {rows['residual'][-1]['error']:.4f}")
    finally:
        torch.set_num_threads(threads)
        bar.close()
    result = {**rows, "steps": steps, "unit": {"plain": "conv-BN-ReLU layers", "residual": "residual blocks"}}
    write_result(out, "identity", result)
    plots.identity_learning(result, Path(out) / "figures" / "identity")
    return result


def run_lesion(run_dirs: list[Path], out=None, limit=None, samples=10, dataset=None, data_dir=None) -> dict:
    results = []
    for d in run_dirs:
        run = load_split(d, "test", limit, dataset, data_dir)
        m = len(run.model.blocks())
        ks = list(range(1, m + 1)) if m <= 12 else sorted({1, 2, 3, 4, 5, 6, 8, 10, 12, 15, 20, m // 2, m})
        removable = sum(map(lesion.removable, run.model.blocks()))
        bar = progress_bar(m + samples * sum(k <= removable for k in ks), f"lesion {run.label}")
        results.append(
            {
                "run": run.dir.name,
                "label": run.label,
                "arch": run.arch,
                "depth": run.depth,
                "baseline": error_rate(run.model, run.x, run.y),
                "blocks": m,
                "single": lesion.single_deletions(run.model, run.x, run.y, bar.update),
                "random": lesion.random_deletions(run.model, run.x, run.y, ks, samples, progress=bar.update),
            }
        )
        bar.close()
    out = output_dir(run_dirs, out)
    result = {"images": len(run.y), "samples": samples, "runs": results}
    write_result(out, "lesion", result)
    plots.lesion(results, out / "figures" / "lesion")
    return result


def run_gradients(
    run_dirs: list[Path],
    out=None,
    depths=(8, 20, 56, 110),
    images=128,
    points=128,
    dataset=None,
    data_dir=None,
    lines=4,
) -> dict:
    results = []
    run = None
    bar = progress_bar((2 + lines) * len(run_dirs) + 2 * len(depths) * lines, "gradients")
    for d in run_dirs:
        run = load_split(d, "train", images, dataset, data_dir)
        torch.manual_seed(run.config["train"].get("seed", 0))
        init = build_model(ModelConfig(**run.config["model"]))
        results.append(
            {
                "run": run.dir.name,
                "label": run.label,
                "arch": run.arch,
                "depth": run.depth,
                "norms": {
                    "init": gradients.conv_gradient_norms(init, run.x, run.y),
                    "trained": gradients.conv_gradient_norms(run.model, run.x, run.y),
                },
                "correlation_trained": gradients.correlation_spread(run.model, run.x[:lines], points, bar.update),
            }
        )
        bar.update(2)
    # Shattering against depth, at initialisation, on the runs' input shape and data.
    base = run.config["model"]
    rows = []
    for arch in ("plain", "resnet"):
        for depth in depths:
            torch.manual_seed(0)
            net = build_model(ModelConfig(**{**base, "arch": arch, "depth": depth}))
            net = gradients.calibrate_bn(net, run.x)
            spread = gradients.correlation_spread(net, run.x[:lines], points, bar.update)
            rows.append({"arch": arch, "depth": depth, **spread})
    bar.close()
    out = output_dir(run_dirs, out)
    result = {"images": len(run.y), "points": points, "lines": lines, "runs": results, "shattering": {"rows": rows}}
    write_result(out, "gradients", result)
    plots.gradient_norms(results, out / "figures" / "gradient_norms")
    plots.shattering(result["shattering"], out / "figures" / "shattering")
    return result


def run_landscape(
    run_dirs: list[Path],
    out=None,
    resolution=21,
    span=1.0,
    images=2000,
    precision="auto",
    dataset=None,
    data_dir=None,
    seed=0,
    log=print,
) -> dict:
    from reslab.train import resolve_precision

    if not (resolution >= 3 and resolution % 2):
        raise UserError(
            f"--resolution must be odd and 3 or more, so that the grid has its centre at the trained weights, "
            f"got {resolution}."
        )
    if not (math.isfinite(span) and span > 0):
        raise UserError(f"--span must be a positive finite number, got {span}.")
    precision = resolve_precision(precision, torch.device("cpu"))
    axis = [span * (2 * i / (resolution - 1) - 1) for i in range(resolution)]
    results = []
    for d in run_dirs:
        run = load_split(d, "train", images, dataset, data_dir, seed=seed)
        model = run.model.to(memory_format=torch.channels_last)
        x = run.x.contiguous(memory_format=torch.channels_last)
        g = torch.Generator().manual_seed(seed)
        d1 = landscape.filter_normalized_direction(model, g)
        d2 = landscape.filter_normalized_direction(model, g)
        t0 = time.perf_counter()
        coords = [[a, b] for b in axis for a in axis]
        bar = progress_bar(len(axis) + len(coords), f"landscape {run.label}")
        line = landscape.surface(model, x, run.y, [d1], [[a] for a in axis], precision, bar.update)
        grid = landscape.surface(model, x, run.y, [d1, d2], coords, precision, bar.update)
        bar.close()
        log(
            f"{run.label}: {len(coords) + len(axis)} evaluations on {len(run.y)} images in "
            f"{time.perf_counter() - t0:.0f} s"
        )
        results.append(
            {
                "run": run.dir.name,
                "label": run.label,
                "arch": run.arch,
                "depth": run.depth,
                "axis": axis,
                "line": [v[0] for v in line],
                "line_error": [v[1] for v in line],
                "grid": [[grid[j * resolution + i][0] for i in range(resolution)] for j in range(resolution)],
                "seconds": time.perf_counter() - t0,
            }
        )
        results[-1]["local_minima"] = local_minima(results[-1]["grid"])
    out = output_dir(run_dirs, out)
    result = {"images": images, "resolution": resolution, "span": span, "precision": precision, "runs": results}
    write_result(out, "landscape", result)
    plots.landscape(results, out / "figures" / "landscape")
    return result


def local_minima(grid: list[list[float]]) -> int:
    """Interior grid points lower than all 8 neighbours: 1 for a bowl, many for a chaotic surface."""
    n = len(grid)
    count = 0
    for j in range(1, n - 1):
        for i in range(1, n - 1):
            v = grid[j][i]
            if all(v < grid[j + dj][i + di] for dj in (-1, 0, 1) for di in (-1, 0, 1) if dj or di):
                count += 1
    return count
