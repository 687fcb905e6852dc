"""An experiment's results as a table: Table-6-style rows (mean and std over seeds) for the
terminal, summary.csv and the report alike."""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path

from reslab import files, runs

SUMMARY_FIELDS = [
    "arch",
    "depth",
    "parameters",
    "macs",
    "runs",
    "train_error_mean",
    "train_error_std",
    "val_error_mean",
    "val_error_std",
    "test_error_mean",
    "test_error_std",
    "reach_threshold",
    "iterations_to_reach",
    "status",
]
REACH_CANDIDATES = (0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.7)


def mean_std(values: list[float]) -> tuple[float | None, float | None]:
    if not values:
        return None, None
    m = sum(values) / len(values)
    s = math.sqrt(sum((v - m) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else 0.0
    return m, s


def iterations_to_reach(metrics: list[dict], threshold: float) -> float | None:
    """First evaluated iteration at which the training error is at or below `threshold`."""
    return next((r["iteration"] for r in metrics if r["train_error"] <= threshold), None)


def crossover(deep: list[tuple[int, float]], shallow: list[tuple[int, float]]) -> int | None:
    """The first evaluated iteration from which the deeper net's training error stays below the
    shallower one's to the end of the run, from two (iteration, training error) curves evaluated
    at the same iterations; None if it does not end below (never in this budget)."""
    theirs = dict(shallow)
    common = [(i, e, theirs[i]) for i, e in deep if i in theirs]
    since = None
    for i, mine, other in common:
        if mine < other:
            since = int(i) if since is None else since
        else:
            since = None
    return since


def mean_train_curve(metric_runs: list[list[dict]]) -> list[tuple[int, float]]:
    """(iteration, mean training error) at the iterations every run evaluated."""
    by_it: dict[int, list[float]] = {}
    for rows in metric_runs:
        for r in rows:
            by_it.setdefault(r["iteration"], []).append(r["train_error"])
    return [(i, sum(v) / len(v)) for i, v in sorted(by_it.items()) if len(v) == len(metric_runs)]


def crossovers(all_runs: list) -> list[dict]:
    """For every pair of depths of an architecture, the iteration from which the deeper net's
    training error stays below the shallower one's: on the seeds' mean curves, and per seed
    (None: not in this budget). The paper expects residual pairs to cross early, plain pairs never."""
    groups: dict[tuple[str, int], dict[int, list[dict]]] = {}
    for r in all_runs:
        if r.state == "finished" and r.metrics:
            groups.setdefault((r.arch, r.depth), {})[r.seed] = r.metrics
    out = []
    for (arch, deep), deep_runs in sorted(groups.items(), key=lambda kv: (arch_order(kv[0][0]), kv[0][1])):
        for (arch2, shallow), shallow_runs in sorted(groups.items()):
            if arch2 != arch or shallow >= deep:
                continue
            seeds = sorted(set(deep_runs) & set(shallow_runs))
            if not seeds:
                continue
            curve = lambda runs_: [(m["iteration"], m["train_error"]) for m in runs_]  # noqa: E731
            out.append(
                {
                    "arch": arch,
                    "shallow": shallow,
                    "deep": deep,
                    "seeds": seeds,
                    "iteration": crossover(
                        mean_train_curve([deep_runs[s] for s in seeds]),
                        mean_train_curve([shallow_runs[s] for s in seeds]),
                    ),
                    "per_seed": {s: crossover(curve(deep_runs[s]), curve(shallow_runs[s])) for s in seeds},
                    "final": (
                        mean_train_curve([deep_runs[s] for s in seeds])[-1][1],
                        mean_train_curve([shallow_runs[s] for s in seeds])[-1][1],
                    ),
                    "total": max(m["iteration"] for s in seeds for m in deep_runs[s]),
                }
            )
    return out


def crossover_text(c: dict) -> str:
    """'from iteration 700', 'never in this budget', or a tie at the end (the mean curves)."""
    if c["iteration"] is not None:
        return f"from iteration {c['iteration']:,}"
    deep, shallow = c.get("final", (None, None))
    if deep is not None and deep == shallow:
        return f"never: a tie, both at {100 * deep:.1f}% at the end"
    return "never in this budget"


def crossover_line(c: dict) -> str:
    """A crossover as a tagged sentence: whether the deeper net trains below the shallower one,
    against the paper's Fig. 6 (residual pairs cross early, plain pairs never do)."""
    from reslab.models import display

    deep, shallow = display(c["arch"], c["deep"]), display(c["arch"], c["shallow"])
    mark = crossover_mark(c)
    if mark == "tie":
        both = 100 * c["final"][0]
        return (
            f"[tie] {deep} and {shallow} end tied in training error (both {both:.1f}%): neither trains below the other"
        )
    if c["iteration"] is not None:
        return f"[{mark}] {deep} trains below {shallow} from iteration {c['iteration']:,} on"
    return f"[{mark}] {deep} never trains below {shallow} in this budget"


def crossover_mark(c: dict) -> str:
    """Whether a crossover is what the paper's Fig. 6 shows: residual pairs cross (the deeper net
    ends below), plain pairs never do; a tie at the end settles neither."""
    from reslab.models import ARCHS

    deep, shallow = c.get("final", (None, None))
    if c["iteration"] is None and deep is not None and deep == shallow:
        return "tie"
    crossed = c["iteration"] is not None
    residual = ARCHS[c["arch"]].residual if c["arch"] in ARCHS else True
    return "yes" if crossed == residual else "NO"


def choose_threshold(all_runs: list[runs.RunRecord]) -> float:
    """The lowest round training error that every run of the shallowest depth reached, so the
    convergence column compares like with like (a deeper net may never get there)."""
    finished = [r for r in all_runs if r.metrics]
    if not finished:
        return 0.5
    shallow = min(r.depth for r in finished)
    best = [min(m["train_error"] for m in r.metrics) for r in finished if r.depth == shallow]
    worst = max(best)
    return next((t for t in REACH_CANDIDATES if t >= worst), 1.0)


def summarize(
    exp_dir: Path, threshold: float | None = None, all_runs: list[runs.RunRecord] | None = None
) -> list[dict]:
    """Table-6-style rows, one per (arch, depth): errors as mean and std over seeds (of the runs
    runs.gather() finds, unless the caller has them already)."""
    all_runs = runs.load_runs(exp_dir) if all_runs is None else all_runs
    threshold = threshold if threshold is not None else choose_threshold(all_runs)
    groups: dict[tuple[str, int], list[runs.RunRecord]] = {}
    for r in all_runs:
        groups.setdefault((r.arch, r.depth), []).append(r)
    rows = []
    for (arch, depth), members in sorted(groups.items(), key=lambda kv: (arch_order(kv[0][0]), kv[0][1])):
        done = [m for m in members if m.state == "finished" and m.metrics]
        finals = [m.final for m in done]
        row = {
            "arch": arch,
            "depth": depth,
            "parameters": members[0].config.parameters,
            "macs": members[0].config.macs,
            "input": "x".join(map(str, members[0].config.data.image_shape)),  # the image the MACs are counted for
            "runs": len(done),
        }
        for split in ("train", "val", "test"):
            vals = [f[f"{split}_error"] for f in finals if f.get(f"{split}_error") is not None]
            row[f"{split}_error_mean"], row[f"{split}_error_std"] = mean_std(vals)
        reach = [iterations_to_reach(m.metrics, threshold) for m in done]
        row["reach_threshold"] = threshold
        reached = [r for r in reach if r is not None]
        row["iterations_to_reach"] = sum(reached) / len(reached) if reach and len(reached) == len(reach) else None
        states = sorted({m.state for m in members} - {"finished"})
        row["status"] = "finished" if not states else ", ".join(states)
        rows.append(row)
    return rows


def arch_order(arch: str) -> int:
    from reslab.models import ARCHS

    return list(ARCHS).index(arch) if arch in ARCHS else len(ARCHS)


def reach_text(r: dict, group: str = "") -> str:
    """A summary row's iterations to the threshold: '-' without a finished run, or 'not reached'."""
    if not r["runs"]:
        return "-"
    return "not reached" if r["iterations_to_reach"] is None else f"{r['iterations_to_reach']:{group}.0f}"


def write_summary(exp_dir: Path) -> list[dict]:
    rows = summarize(exp_dir)
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=SUMMARY_FIELDS, lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: ("" if r.get(k) is None else r[k]) for k in SUMMARY_FIELDS})
    files.atomic_write_text(Path(exp_dir) / "summary.csv", buf.getvalue())
    return rows


def pct(v: float | None, std: float | None = None) -> str:
    if v is None:
        return "-"
    return f"{100 * v:.1f} ± {100 * std:.1f}" if std else f"{100 * v:.1f}"


def summary_rows(rows: list[dict], html: bool = False) -> tuple[list[str], list[list[str]]]:
    """The summary as a table's head and rows of text, for the terminal (with parameters and
    MACs) or the report (with each cell's status; cost has its own section there)."""
    from reslab.models import display

    has_val = any(r["val_error_mean"] is not None for r in rows)
    threshold = rows[0]["reach_threshold"] if rows else 0
    err = "error %" if html else "err %"
    head = (
        [
            "network",
            *(
                []
                if html
                else ["params", "MACs (M" + (f", {rows[0]['input']})" if rows and rows[0].get("input") else ")")]
            ),
        ]
        + ["runs", f"train {err}"]
        + ([f"val {err}"] if has_val else [])
        + [
            f"test {err}",
            f"iters to {100 * threshold:g}% train err"
            if not html
            else f"iterations to {100 * threshold:g}% train error",
        ]
        + (["status"] if html else [])
    )
    lines = []
    for r in rows:  # cells without a finished run stay in the table, with their status
        name = display(r["arch"], r["depth"]) if html else f"{r['arch']}-{r['depth']}"
        cost = [] if html else [f"{r['parameters']:,}", f"{r['macs'] / 1e6:.2f}"]
        lines.append(
            [name, *cost, str(r["runs"]), pct(r["train_error_mean"], r["train_error_std"])]
            + ([pct(r["val_error_mean"], r["val_error_std"])] if has_val else [])
            + [pct(r["test_error_mean"], r["test_error_std"]), reach_text(r, "," if html else "")]
            + ([r["status"]] if html else [])
        )
    return head, lines


def summary_table(rows: list[dict]) -> str:
    """The summary as aligned text for the terminal."""
    head, lines = summary_rows(rows)
    lines = [head, *lines]
    widths = [max(len(line[i]) for line in lines) for i in range(len(head))]
    return "\n".join(
        "  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(line, widths))) for line in lines
    )
