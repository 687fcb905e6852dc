"""Report sections for the analyses: each reads OUT/analyses/NAME.json and OUT/figures/NAME.png
and returns HTML (or None when the analysis has not been run). Every number comes from there."""

from __future__ import annotations

from pathlib import Path

from reslab.analysis.common import read_result
from reslab.analysis.construct import outputs_text
from reslab.experiment import pct as pc
from reslab.page import count, embed_png, esc, table, verdict_html


def figure(exp_dir: Path, name: str, alt: str) -> str:
    path = Path(exp_dir) / "figures" / f"{name}.png"
    return f'<div class="card">{embed_png(path, alt)}</div>' if path.exists() else ""


def finding_html(f: dict) -> str:
    from reslab.verdicts import Verdict

    return verdict_html(Verdict(f["claim"], f["holds"], f["text"]))


def responses_section(exp_dir: Path) -> str | None:
    r = read_result(exp_dir, "responses")
    if not r:
        return None
    rows = []
    for run in r["runs"]:
        layers = run["layers"]
        gammas = [x["gamma"] for x in layers if x["gamma"] is not None]
        rows.append(
            [
                run["label"],
                str(len(layers)),
                f"{sum(x['std'] for x in layers) / len(layers):.3f}",
                f"{sum(x['std_per_channel'] for x in layers) / len(layers):.3f}",
                f"{sum(gammas) / len(gammas):.3f}" if gammas else "-",
            ]
        )
    return (
        "<h2>Layer responses (paper, Fig. 7)</h2>"
        + "".join(finding_html(f) for f in r["findings"])
        + figure(exp_dir, "responses", "standard deviation of layer responses")
        + table(["network", "3x3 layers", "mean std (pooled)", "mean std (per channel)", "mean |gamma|"], rows)
        + f'<p class="note">Response: the output of the BN after each 3x3 conv, before the ReLU or the addition '
        f"(pre-activation nets: the 3x3 conv's output), on {count(r['images'])} {esc(r['split'])} images in eval "
        "mode. Pooled: one std over images, channels and positions; per channel: the mean over channels of "
        "each channel's std. In eval mode a channel's std after BN is close to its |gamma|. The paper's findings "
        "concern fully trained networks; after a short run the BN scales are still near their initial value 1, "
        "and so are the responses.</p>"
    )


def construct_section(exp_dir: Path) -> str | None:
    from reslab.verdicts import display

    r = read_result(exp_dir, "construct")
    if not r:
        return None
    rows, findings = [], []
    for c in r["results"]:
        deep = display(c["arch"], c["depth"])
        rows.append(
            [
                f"{c['source_label']} → {deep}",
                str(c["identity_blocks"]),
                f"{c['max_abs_difference']:.1e}",
                pc(c["source_train_error"]),
                pc(c["constructed_train_error"]),
                pc(c.get("scratch_train_error")),
            ]
        )
        if "scratch_train_error" in c:
            better = c["constructed_train_error"] < c["scratch_train_error"] - 0.01
            text = (
                f"{deep} built from the trained {c['source_label']} plus {c['identity_blocks']} identity blocks "
                f"{outputs_text(c)} and has "
                f"{pc(c['constructed_train_error'])}% training error; SGD from scratch reached "
                f"{pc(c['scratch_train_error'])}%."
            )
            text += (
                " A solution at least as good as the shallow net exists, yet the solver did not find it."
                if better
                else " Here SGD found a solution as good as the constructed one."
            )
            findings.append(
                {
                    "claim": f"Constructed solution at depth {c['depth']} ({c['arch']})",
                    "holds": better if c["arch"] == "plain" else None,
                    "text": text,
                }
            )
    return (
        "<h2>The constructed solution</h2>"
        + "".join(finding_html(f) for f in findings)
        + table(
            [
                "construction",
                "identity blocks",
                "max |Δ output|",
                "shallow train err %",
                "constructed train err %",
                "SGD from scratch train err %",
            ],
            rows,
        )
        + '<p class="note">Training errors measured here in eval mode on the unaugmented training images. '
        "Extra plain layers: Dirac kernels and pass-through BN (exact on the non-negative outputs of a ReLU); "
        "extra residual blocks: the residual branch zeroed (last BN gamma = beta = 0).</p>"
    )


def identity_section(exp_dir: Path) -> str | None:
    from reslab.analysis.identity import finding

    r = read_result(exp_dir, "identity")
    if not r:
        return None
    rows = [
        [str(p["convs"]), str(p["k"]), f"{p['error']:.2e}", str(q["k"]), f"{q['error']:.2e}"]
        for p, q in zip(r["plain"], r["residual"])
    ]
    return (
        "<h2>Learning the identity</h2>"
        + finding_html(finding(r))
        + figure(exp_dir, "identity", "identity error")
        + table(["3x3 convs", "plain layers", "plain error", "residual blocks", "residual error"], rows)
    )


def lesion_section(exp_dir: Path) -> str | None:
    r = read_result(exp_dir, "lesion")
    if not r:
        return None
    rows = []
    for run in r["runs"]:
        non_down = [s["error"] for s in run["single"] if s["error"] is not None and not s["downsampling"]]
        down = [s["error"] for s in run["single"] if s["error"] is not None and s["downsampling"]]
        fixed = sum(s["error"] is None for s in run["single"])
        rows.append(
            [
                run["label"],
                pc(run["baseline"]),
                pc(sorted(non_down)[len(non_down) // 2]) if non_down else "-",
                pc(max(non_down)) if non_down else "-",
                pc(max(down)) if down else "-",
                f"{fixed} (shape changes)" if fixed else "0",
            ]
        )
    return (
        "<h2>Lesion study (Veit et al. 2016)</h2>"
        + figure(exp_dir, "lesion", "lesion study")
        + table(
            [
                "network",
                "test err %",
                "delete one block: median %",
                "worst %",
                "worst downsampling %",
                "blocks that cannot be deleted",
            ],
            rows,
        )
        + f'<p class="note">{count(r["images"])} test images. A deleted residual block keeps its shortcut; a deleted '
        "plain block passes its input on (impossible where it changes the shape). Random deletions: "
        f"{esc(r['samples'])} draws per k.</p>"
    )


def gradients_section(exp_dir: Path) -> str | None:
    r = read_result(exp_dir, "gradients")
    if not r:
        return None
    rows = [
        [f"{x['arch']}-{x['depth']}", f"{x['correlation']:.3f}", f"{x['correlation_std']:.3f}"]
        for x in r["shattering"]["rows"]
    ]
    return (
        "<h2>Gradient flow</h2>"
        + figure(exp_dir, "gradient_norms", "per-layer gradient norms")
        + figure(exp_dir, "shattering", "gradient correlation against depth")
        + table(["network at initialisation", "correlation of neighbouring input gradients", "std over lines"], rows)
        + f'<p class="note">Gradient norms: one batch of {esc(r["images"])} training images, cross-entropy, train-mode '
        f"BN. Shattering (Balduzzi et al. 2017): input gradients of the top logit at {esc(r['points'])} points on each "
        f"of {esc(r['lines'])} lines (each through its own image, along its own random direction); the mean and "
        "the standard deviation over the lines; BN in eval mode with statistics from real images.</p>"
    )


def landscape_section(exp_dir: Path) -> str | None:
    r = read_result(exp_dir, "landscape")
    if not r:
        return None
    rows = [
        [
            x["label"],
            f"{x['grid'][len(x['axis']) // 2][len(x['axis']) // 2]:.3f}",  # the centre: --resolution is odd
            f"{min(min(g) for g in x['grid']):.3f}",
            f"{max(max(g) for g in x['grid']):.3f}",
            str(x["local_minima"]),
        ]
        for x in r["runs"]
    ]
    return (
        "<h2>Loss landscape (Li et al. 2018)</h2>"
        + figure(exp_dir, "landscape", "loss landscape")
        + table(["network", "loss at the trained weights", "lowest", "highest", "local minima on the grid"], rows)
        + f'<p class="note">Filter-normalised random directions, BN parameters fixed, BN in eval mode; '
        f"{esc(r['resolution'])}x{esc(r['resolution'])} grid over [-{esc(r['span'])}, {esc(r['span'])}]², "
        f"{count(r['images'])} "
        "training images.</p>"
    )


SECTIONS = [
    responses_section,
    construct_section,
    identity_section,
    lesion_section,
    gradients_section,
    landscape_section,
]
