"""The self-contained HTML report of a demo or experiment directory.

One file, figures embedded as data URIs, no scripts or network: it opens from a file:// URL.
Everything shown comes from the run directories; every string from them is escaped.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import asdict
from html import escape
from pathlib import Path

from reslab import analysis, config, files, runs
from reslab.analysis.common import read_result
from reslab.errors import UserError, plural
from reslab.models import display
from reslab.page import Html, drawn, esc, table, verdict_html
from reslab.summary import crossover_text, crossovers, pct, summarize, summary_rows
from reslab.verdicts import degradation_verdicts

CSS = """
body{font-family:system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;margin:0;background:#f6f7f9;color:#1d2330}
main{max-width:1100px;margin:0 auto;padding:28px 36px 60px}
h1{font-size:30px;margin:0 0 4px}
h2{font-size:22px;margin:36px 0 12px;border-bottom:2px solid #dde2ea;padding-bottom:6px}
.sub{color:#5b6475;margin:0 0 18px}
pre.card{white-space:pre-wrap;word-break:break-all;font-size:14px}
.card{background:#fff;border-radius:10px;box-shadow:0 1px 3px rgba(0,0,0,.08);padding:18px 22px;margin:14px 0}
.verdict{display:flex;gap:14px;align-items:flex-start;padding:12px 16px;margin:10px 0;border-radius:8px;background:#fff;
 border-left:6px solid #9aa3b2;box-shadow:0 1px 2px rgba(0,0,0,.06)}
.verdict.yes{border-color:#2e9d57}.verdict.no{border-color:#d64541}.verdict.na{border-color:#c9ced8;background:#fafbfc}
.mark{font-size:22px;font-weight:700;min-width:26px}.yes .mark{color:#2e9d57}.no .mark{color:#d64541}
.verdict b{display:block;font-size:16px;margin-bottom:2px}
table{border-collapse:collapse;width:100%;font-size:15px;background:#fff}
th,td{padding:7px 10px;border-bottom:1px solid #e6e9ef;text-align:right}th{background:#eef1f6}
td:first-child,th:first-child{text-align:left}
img{max-width:100%;display:block;margin:0 auto}
.kv{display:grid;grid-template-columns:220px 1fr;gap:4px 16px;font-size:14px}.kv div:nth-child(odd){color:#5b6475}
.note{color:#5b6475;font-size:14px}code{background:#eef1f6;padding:1px 5px;border-radius:4px}
.state-finished{color:#2e9d57}.state-failed,.state-diverged{color:#d64541}.state-running,.state-interrupted{color:#c27c0e}
"""


def common_config(all_runs: list[runs.RunRecord]) -> dict:
    """Training settings shared by every run (the grid's varying keys left out)."""
    configs = [asdict(r.config.train) for r in all_runs]
    keys = [k for k in configs[0] if all(c.get(k) == configs[0][k] for c in configs)]
    return {k: configs[0][k] for k in keys if k not in config.GRID_KEYS}


MARKS = (
    '<p class="note">✓ the measurement agrees with the paper · ✗ it contradicts it · ? too close to call '
    "(the text says by how much) · – not testable at this budget (the text says where it is)</p>"
)


def report_title(all_runs: list[runs.RunRecord]) -> str:
    """A title that fits what the report holds."""
    from reslab.models import ARCHS

    kinds = {ARCHS[r.arch].residual for r in all_runs if r.arch in ARCHS}
    if {True, False} <= kinds and len({r.depth for r in all_runs}) > 1 and any(r.metrics for r in all_runs):
        return "Deep residual learning: the degradation problem, measured"
    if not any(r.metrics for r in all_runs):
        return "Residual networks, analysed"
    labels = sorted({r.label for r in all_runs})
    return "Training " + (", ".join(labels) if len(labels) <= 4 else f"{len(labels)} networks")


def build_report(exp_dir: Path) -> str:
    exp_dir = Path(exp_dir)
    all_runs, skipped = runs.gather(exp_dir)
    if not all_runs:
        reasons = "; ".join(f"{name}: {why}" for name, why in skipped[:3])
        raise UserError(
            f"{exp_dir} holds no run directories (folders with a reslab config.json) that can be reported"
            + (f" ({reasons})" if reasons else "")
            + "; nothing to report."
        )
    summary = summarize(exp_dir, all_runs=all_runs)
    trained = any(r.metrics for r in all_runs)
    title = report_title(all_runs)
    parts = [f"<h1>{escape(title)}</h1>", subtitle(exp_dir, all_runs)]
    if trained:
        parts += training_sections(exp_dir, summary, all_runs)
    parts.append(cost_section(summary, all_runs[0].config.data))
    parts += [html for name in analysis.NAMES if (html := guarded(name, exp_dir))]
    parts += [
        runs_section(all_runs),
        skipped_section(skipped),
        recipe_section(exp_dir, all_runs),
        reproduce_section(exp_dir, all_runs),
        configuration_section(all_runs),
    ]
    body = "\n".join(parts)
    return (
        f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{escape(title)}</title>'
        f'<meta name="viewport" content="width=device-width, initial-scale=1"><style>{CSS}</style></head>'
        f"<body><main>{body}</main></body></html>\n"
    )


def imported(all_runs: list[runs.RunRecord]) -> bool:
    """Whether every run is an imported checkpoint: trained elsewhere, by a recipe not recorded."""
    return all(r.config.imported is not None for r in all_runs)


def subtitle(exp_dir: Path, all_runs: list[runs.RunRecord]) -> str:
    first = all_runs[0].config
    made = f"report made {datetime.datetime.now().strftime('%Y-%m-%d %H:%M')}"
    if imported(all_runs):
        return (
            f'<p class="sub">{esc(exp_dir.resolve().name)} · {plural(len(all_runs), "imported network")}, trained '
            f"elsewhere (for <b>{esc(first.dataset)}</b>, as imported) · {made}</p>"
        )
    wall = sum((r.final["seconds"] or 0) if r.metrics else 0 for r in all_runs)
    return (
        f'<p class="sub">{esc(exp_dir.resolve().name)} · {plural(len(all_runs), "run")} on '
        f"<b>{esc(first.dataset)}</b> · {esc(first.environment.get('device', '?'))} · "
        f"{wall / 60:.1f} min of training in all · {made}</p>"
    )


def training_sections(exp_dir: Path, summary: list[dict], all_runs: list[runs.RunRecord]) -> list[str]:
    """Verdicts, the Fig. 1/6 curves and the Table-6 summary."""
    from reslab.plots import error_curves, error_vs_depth, figure_title, reach_vs_depth

    parts = []
    verdicts = degradation_verdicts(summary, all_runs)
    if verdicts:
        parts.append("<h2>What the measurements say</h2>" + MARKS + "".join(verdict_html(v) for v in verdicts))
    title = figure_title(all_runs)
    figures = exp_dir / "figures"
    curves = drawn(
        "error_curves",
        "training and test error against iterations",
        error_curves,
        all_runs,
        figures / "error_curves",
        title,
    )
    parts.append(f'<h2>Error during training (paper, Fig. 1 and 6)</h2><div class="card">{curves}</div>')
    parts.append(crossover_section(all_runs))
    if len({r["depth"] for r in summary if r["runs"]}) > 1:
        by_depth = drawn(
            "error_vs_depth",
            "final training and test error against depth",
            error_vs_depth,
            summary,
            figures / "error_vs_depth",
            title,
        )
        done = [r for r in all_runs if r.metrics]
        budget = max((int(r.final["iteration"]) for r in done), default=None)
        every = done[0].config.resolved.eval_every if done else None
        speed = drawn(
            "reach_vs_depth",
            "iterations to the threshold against depth",
            reach_vs_depth,
            summary,
            figures / "reach_vs_depth",
            title,
            budget,
            every,
        )
        parts.append(
            f'<h2>Error and speed against depth</h2><div class="card">{by_depth}</div><div class="card">{speed}</div>'
        )
    head, rows = summary_rows(summary, html=True)
    parts.append(
        "<h2>Summary (paper, Table 6)</h2>"
        + table(head, rows)
        + '<p class="note">Errors are final values, mean ± standard deviation over seeds. Training error is '
        "the running error of the mini-batches since the previous evaluation (train mode, augmented when "
        "augmentation is on), as in the paper's dashed curves.</p>"
    )
    return parts


def crossover_section(all_runs: list[runs.RunRecord]) -> str:
    """For every pair of depths, from which iteration the deeper net trains better."""
    found = crossovers(all_runs)
    if not found:
        return ""
    rows = [
        [
            f"{display(c['arch'], c['deep'])} below {display(c['arch'], c['shallow'])}",
            crossover_text(c).replace("from iteration ", ""),
            ", ".join(f"seed {s}: {'never' if it is None else f'{it:,}'}" for s, it in sorted(c["per_seed"].items())),
        ]
        for c in found
    ]
    return (
        "<h2>Crossovers: when the deeper net trains better</h2>"
        + table(["pair", "iteration (mean curves)", "per seed"], rows)
        + '<p class="note">The first evaluation from which the deeper net\'s training error stays below the '
        "shallower one's to the end of the run; never: it does not end below. In the paper's Fig. 6 the "
        "residual pairs cross early and the plain pairs never do.</p>"
    )


def recipe_section(exp_dir: Path, all_runs: list[runs.RunRecord]) -> str:
    """A preset's departures from the paper, each with its reason (experiment.json names the preset)."""
    from reslab.presets import PRESETS

    spec = runs.read_experiment(exp_dir) if os.path.lexists(exp_dir / "experiment.json") else {}
    preset = PRESETS.get(str(spec.get("preset")))
    if preset is None:
        return ""
    train = asdict(all_runs[0].config.train)
    rows = [[d.setting, d.paper, d.preset, d.why] for d in preset.in_force(train)]
    return (
        f"<h2>Recipe: the {esc(preset.name)} preset</h2>"
        + f'<p class="note">{esc(preset.summary)}. The same recipe for every network, plain and residual: the '
        "shortcuts are the only difference. Everything not listed is the paper's (SGD, momentum 0.9, weight decay "
        "1e-4, lr 0.1, batch 128, He init, pad-crop-flip). Where these were measured: "
        f"<code>{esc(preset.study)}</code>.</p>" + table(["setting", "paper", "this preset", "why"], rows)
    )


def cost_section(summary: list[dict], data: runs.DataInfo) -> str:
    rows = [[display(r["arch"], r["depth"]), f"{r['parameters']:,}", f"{r['macs'] / 1e6:.2f}"] for r in summary]
    shape = "x".join(map(str, data.image_shape))
    return (
        "<h2>What the shortcuts cost</h2>"
        + table(["network", "parameters", f"MACs per {shape} image (M)"], rows)
        + '<p class="note">Counted from the built models (convolutions and the classifier; BN, ReLU and the '
        "element-wise additions are not counted).</p>"
    )


def guarded(name: str, exp_dir: Path) -> str | None:
    """An analysis's section, or a note that its file could not be read: a damaged or foreign
    analyses/*.json costs its own section, never the report."""
    try:
        result = read_result(exp_dir, name)
        return None if result is None else analysis.load(name).section(result, exp_dir)
    except UserError as e:  # every value was checked against the analysis's Result
        reason = str(e)
    note = f"analyses/{name}.json could not be shown: {reason}"
    return f'<h2>{esc(name.capitalize())}</h2><p class="note">{esc(note)}</p>'


def skipped_section(skipped: list[tuple[str, str]]) -> str:
    if not skipped:
        return ""
    return (
        "<h2>Runs left out</h2>"
        + table(["run", "why it is not part of this report"], [[name, why] for name, why in skipped])
        + '<p class="note">Only runs that belong together (the cells of the experiment, trained with one '
        "recipe) enter the tables, curves and verdicts.</p>"
    )


def runs_section(all_runs: list[runs.RunRecord]) -> str:
    rows = []
    for r in all_runs:
        last = r.final or {}
        state = r.state
        rows.append(
            [
                r.name,
                Html(f'<span class="state-{escape(state)}">{escape(state)}</span>'),
                f"{last.get('iteration', 0):,.0f}",
                pct(last.get("train_error")),
                pct(last.get("test_error")),
                f"{last.get('seconds', 0):.0f}",
                r.status.get("message", ""),
            ]
        )
    return "<h2>Runs</h2>" + table(
        ["run", "status", "iterations", "train error %", "test error %", "seconds", "message"], rows
    )


def configuration_section(all_runs: list[runs.RunRecord]) -> str:
    first = all_runs[0].config
    data, resolved = first.data, first.resolved
    if imported(all_runs):  # reslab's own recipe would be a false description of how they were trained
        origins = {r.name: r.config.imported or {} for r in all_runs}
        kv: dict = {
            name: f"{o.get('file', '?')} (sha256 {str(o.get('sha256', '?'))[:12]})" for name, o in origins.items()
        }
        kv["input normalisation"] = resolved.normalization
        return (
            "<h2>Configuration</h2>"
            + '<p class="note">Imported checkpoints: they were trained elsewhere, and how is not recorded in '
            "them; reslab knows only their weights and the input normalisation given at import.</p>" + kv_html(kv)
        )
    shared = common_config(all_runs)
    values = lambda rows: {label: v for key, label in rows if (v := setting(key, shared, resolved, data)) is not None}  # noqa: E731
    recipe, plumbing = values(RECIPE_ROWS), values(PLUMBING_ROWS)
    plumbing["device"] = first.environment.get("device", shared.get("device"))
    return (
        "<h2>Configuration</h2>"
        + '<p class="note">The recipe: what every network learned from (each setting as it was resolved; '
        "<i>auto</i> choices name what they became).</p>"
        + kv_html(recipe)
        + '<p class="note">Speed and plumbing: how fast and where it ran, not what was learned.</p>'
        + kv_html(plumbing)
        + "<h2>Environment</h2>"
        + kv_html({k: v for k, v in first.environment.items() if k not in ("command", "device")})
    )


def reproduce_section(exp_dir: Path, all_runs: list[runs.RunRecord]) -> str:
    """The command that made these runs, as it was typed (the experiment's, or the one run's)."""
    record = runs.read_experiment(exp_dir) if os.path.lexists(exp_dir / "experiment.json") else {}
    command = record.get("command") or (all_runs[0].config.environment.get("command") if len(all_runs) == 1 else None)
    if not command:
        return ""
    commit = all_runs[0].config.environment.get("git_commit")
    where = f" in a checkout of reslab at commit <code>{esc(commit)}</code>" if commit else ""
    return (
        "<h2>Reproduce</h2>"
        + f'<p class="note">These runs were made with this command{where}; run it again to reproduce them (with '
        "another <code>--out</code>, or in this folder to resume any that did not finish).</p>"
        + f'<pre class="card">{esc(command)}</pre>'
    )


# The report's configuration rows, (setting, label): the recipe first, then speed and plumbing.
RECIPE_ROWS = [
    ("dataset", "dataset"), ("train_size", "training images"), ("val_size", "validation images"),
    ("test_size", "test images"), ("classes", "classes"), ("image_size", "image size"), ("shortcut", "shortcut"),
    ("width", "width"), ("init", "init"), ("block_gamma", "block BN scale at init"),
    ("init_from", "initial weights"), ("batch_size", "batch size"),
    ("iterations", "iterations"), ("lr", "lr"), ("momentum", "momentum"), ("weight_decay", "weight decay"),
    ("schedule", "lr schedule"), ("augment", "augmentation"), ("eval_every", "evaluated every"),
]  # fmt: skip
PLUMBING_ROWS = [
    ("precision", "precision"), ("compile", "torch.compile"), ("cuda_graphs", "CUDA graphs"),
    ("channels_last", "channels last"), ("processes", "processes"), ("sync_bn", "synchronised BN"),
    ("tensorboard", "TensorBoard"), ("download", "download"), ("data_dir", "data folder"),
]  # fmt: skip
AUTO = ("augment", "precision", "compile", "cuda_graphs")
SCHEDULE_KEYS = ("lr", "schedule", "milestones", "linear_warmup", "warmup_lr", "warmup_error")


def schedule_text(shared: dict, resolved: runs.Resolved) -> str | None:
    """The runs' lr schedule as the Schedule says it; None when they differ in it."""
    from reslab.config import TrainConfig
    from reslab.schedule import Schedule

    if resolved.iterations is None or any(k not in shared for k in SCHEDULE_KEYS):
        return None
    cfg = TrainConfig(**{k: shared[k] for k in SCHEDULE_KEYS})
    return Schedule.of(cfg, resolved.iterations, bool(resolved.warmup)).describe()


def setting(key: str, shared: dict, resolved: runs.Resolved, data: runs.DataInfo):
    """One row's value, shown once: what an automatic choice resolved to, with 'auto' beside it;
    None when the runs differ in it or it does not apply."""
    if key in ("train_size", "val_size", "test_size"):
        size = getattr(data, key)
        return None if size is None else f"{size:,}"
    if key == "classes":
        return len(data.classes)
    if key == "iterations":
        total, epochs = resolved.iterations, resolved.epochs
        return None if total is None else f"{total:,}" + (f" ({epochs:g} epochs)" if epochs is not None else "")
    if key == "schedule":  # the whole schedule in words, each warm-up named for what it is
        return schedule_text(shared, resolved)
    if key == "eval_every" and resolved.eval_every is not None:
        return f"{resolved.eval_every:,} iterations"
    if key == "processes":
        return resolved.processes
    value = shared.get(key)
    if key in AUTO and getattr(resolved, key) is not None:
        became = getattr(resolved, key)
        became = ("on" if became else "off") if isinstance(became, bool) else became
        return f"{became} (auto)" if value == "auto" else became
    if key == "image_size" and value is None:
        return None
    if isinstance(value, bool):
        return "on" if value else "off"
    return f"{value:,}" if isinstance(value, int) else value


def kv_html(d: dict) -> str:
    cells = "".join(f"<div>{escape(str(k))}</div><div>{escape(str(v))}</div>" for k, v in d.items())
    return f'<div class="card kv">{cells}</div>'


# What the report writes into its folder (a figure is drawn only when the runs have something for it).
OUTPUTS = ["report.html"] + [
    f"figures/{name}{ext}" for name in ("error_curves", "error_vs_depth", "reach_vs_depth") for ext in (".png", ".svg")
]


def write_report(exp_dir: Path) -> Path:
    files.check_outputs(Path(exp_dir), OUTPUTS)  # nothing written when one of them is the user's
    path = Path(exp_dir) / "report.html"
    files.atomic_write_text(path, build_report(exp_dir))
    return path
