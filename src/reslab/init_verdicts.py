"""The init experiment's claims, each judged from its runs' measurements (init_study.study's
rows: one per run, with its scale, final errors and branch measurements), or marked not testable
here with the reason."""

from __future__ import annotations

from reslab.models import display
from reslab.verdicts import MARGIN, Verdict

NEAR = 1.0  # a residual block "near the identity": its branch a smaller perturbation than the shortcut it adds to
TRAINS = 0.1  # a net "trains" when it ends 10 points or more below chance; it is "stuck" within 5 points of it


def mean(values: list[float]) -> float:
    return sum(values) / len(values)


def by(rows: list[dict], **keys) -> list[dict]:
    return [r for r in rows if all(r[k] == v for k, v in keys.items())]


def gap(rows: list[dict], arch: str, scale: float, deep: int, shallow: int) -> float | None:
    """Deep minus shallow final training error at a scale (mean over the seeds both have)."""
    d, s = by(rows, arch=arch, scale=scale, depth=deep), by(rows, arch=arch, scale=scale, depth=shallow)
    seeds = {r["seed"] for r in d} & {r["seed"] for r in s}
    if not seeds:
        return None
    pick = lambda rs: mean([r["train_error"] for r in rs if r["seed"] in seeds])  # noqa: E731
    return pick(d) - pick(s)


def judge(rows: list[dict], scales: list[float]) -> list[Verdict]:
    depths = sorted({r["depth"] for r in rows})
    if len(depths) < 2:
        return [Verdict("The init experiment compares two depths", None, "fewer than two depths finished.", False)]
    shallow, deep = depths[0], depths[-1]
    return [
        shrinking_gap(rows, scales, deep, shallow),
        plain_control(rows, scales, deep, shallow),
        zero_start(rows, scales),
        near_identity(rows),
        deeper_nearer(rows, deep, shallow),
    ]


def shrinking_gap(rows: list[dict], scales: list[float], deep: int, shallow: int) -> Verdict:
    claim = f"The deep ResNet's disadvantage shrinks as the initial scale falls ({display('resnet', deep)} minus "
    claim += f"{display('resnet', shallow)})"
    gaps = {s: g for s in sorted(scales, reverse=True) if (g := gap(rows, "resnet", s, deep, shallow)) is not None}
    if len(gaps) < 2:
        return Verdict(claim, None, "needs ResNets of both depths at two scales or more.", False)
    fitted = all(r["train_error"] < 0.005 for r in by(rows, arch="resnet"))
    text = "training error gap by scale: " + ", ".join(f"{s:g}: {100 * g:+.1f} points" for s, g in gaps.items())
    if fitted:
        return Verdict(
            claim,
            None,
            f"every ResNet fits the training set at every scale, so this budget cannot "
            f"separate them ({text}); a harder task or a shorter run can.",
            False,
        )
    first, last = next(iter(gaps.values())), list(gaps.values())[-1]
    holds = None if abs(first - last) <= MARGIN else last < first
    return Verdict(
        claim,
        holds,
        f"{text} (from the largest scale to the smallest; a change within {100 * MARGIN:g} point counts as unclear).",
    )


def plain_control(rows: list[dict], scales: list[float], deep: int, shallow: int) -> Verdict:
    """Plain nets: degradation with depth at every scale above 0, and errors that do not follow
    the scale beyond the seeds' own spread (the next BN undoes a plain block's scale)."""
    claim = "Plain nets are the control: they degrade with depth at every scale, whatever the scale"
    positive = [s for s in scales if s > 0]
    gaps = {s: g for s in positive if (g := gap(rows, "plain", s, deep, shallow)) is not None}
    if not gaps:
        return Verdict(claim, None, "needs plain nets of both depths at a scale above 0.", False)
    degrade = all(g > MARGIN for g in gaps.values())
    text = f"{display('plain', deep)} minus {display('plain', shallow)}: " + ", ".join(
        f"scale {s:g}: {100 * g:+.1f} points" for s, g in gaps.items()
    )
    spread = scale_spread(rows, positive, deep)
    if spread is None:
        return Verdict(claim, degrade, text + "; whether the scale matters beyond seed noise needs two seeds.")
    range_, noise = spread
    steady = range_ <= max(2 * noise, 2 * MARGIN)
    text += (
        f"; {display('plain', deep)}'s error varies by {100 * range_:.1f} points across scales against "
        f"{100 * noise:.1f} between seeds"
    )
    return Verdict(claim, degrade and steady, text + ("" if steady else ": the scale matters beyond seed noise") + ".")


def scale_spread(rows: list[dict], scales: list[float], depth: int) -> tuple[float, float] | None:
    """For the plain net of `depth`: the range of its mean error over the scales, and the largest
    difference between seeds at one scale (None with one seed)."""
    means, noise = [], 0.0
    for s in scales:
        errs = [r["train_error"] for r in by(rows, arch="plain", scale=s, depth=depth)]
        if not errs:
            continue
        means.append(mean(errs))
        noise = max(noise, max(errs) - min(errs))
    seeds = {r["seed"] for r in by(rows, arch="plain", depth=depth)}
    return None if len(seeds) < 2 or len(means) < 2 else (max(means) - min(means), noise)


def zero_start(rows: list[dict], scales: list[float]) -> Verdict:
    """At scale 0 a plain net passes no signal, a residual one starts as the identity and trains."""
    claim = "The shortcut makes a zero start possible (scale 0)"
    if 0.0 not in scales:
        return Verdict(claim, None, "needs scale 0 among --scales.", False)
    plain, res = by(rows, arch="plain", scale=0.0), by(rows, arch="resnet", scale=0.0)
    if not plain or not res:
        return Verdict(claim, None, "needs plain and residual nets at scale 0.", False)
    silent = all((r["init_signal"] or 0.0) == 0.0 for r in plain)
    identity = all(r["init_ratio"] == 0.0 for r in res)
    chance = 1 - 1 / max(2, classes_of(rows))
    stuck = all(r["train_error"] > chance - 0.05 for r in plain)
    trained = all(r["train_error"] < chance - TRAINS for r in res)
    plain_errors = ", ".join(f"{100 * r['train_error']:.1f}%" for r in plain)
    res_errors = ", ".join(f"{100 * r['train_error']:.1f}%" for r in res)
    signal = max((r["init_signal"] or 0.0) for r in plain)
    text = (
        f"at initialisation the plain nets pass {'no' if silent else 'some'} signal to the classifier (std of "
        f"their features over images {signal:.3g} of the stem's) and end at {plain_errors} training error (chance "
        f"{100 * chance:.0f}%); every residual block's branch is {'exactly 0' if identity else 'not 0'} against "
        f"its shortcut, and the ResNets end at {res_errors}."
    )
    return Verdict(claim, silent and identity and stuck and trained, text)


def classes_of(rows: list[dict]) -> int:
    return max((r.get("classes", 10) for r in rows), default=10)


def near_identity(rows: list[dict]) -> Verdict:
    """After training, a ResNet's blocks' branches are on average smaller than their shortcuts."""
    claim = "Trained residual blocks stay near the identity: on average each branch smaller than its shortcut"
    res = [r for r in by(rows, arch="resnet") if r["end_ratio"] is not None]
    if not res:
        return Verdict(claim, None, "needs finished ResNets.", False)
    blocks = [(b["ratio"], b, r) for r in res for b in r["end"]["blocks"] if b["ratio"] is not None]
    largest, block, run = max(blocks, key=lambda t: t[0])
    seeds = len({r["seed"] for r in res}) > 1
    name = lambda r: f"{r['label']} at {r['scale']:g}" + (f" (seed {r['seed']})" if seeds else "")  # noqa: E731
    means = ", ".join(f"{name(r)}: {r['end_ratio']:.2f}" for r in res)
    where = f"block {block['block']} of {run['label']} at scale {run['scale']:g}"
    where += f", seed {run['seed']}" if seeds else ""
    if block.get("downsampling"):
        where += ", a downsampling block, whose shortcut carries zeros in half its channels"
    text = f"mean ‖F(x)‖ / ‖shortcut‖ after training: {means}; the largest single block: {largest:.2f} ({where})."
    return Verdict(claim, all(r["end_ratio"] < NEAR for r in res), text)


def deeper_nearer(rows: list[dict], deep: int, shallow: int) -> Verdict:
    """After training, the deeper ResNet's blocks are nearer the identity than the shallower one's."""
    claim = f"{display('resnet', deep)}'s blocks end nearer the identity than {display('resnet', shallow)}'s"
    res = [r for r in by(rows, arch="resnet") if r["end_ratio"] is not None]
    pairs = []
    for s in sorted({r["scale"] for r in res}, reverse=True):
        d = [r["end_ratio"] for r in by(res, scale=s, depth=deep)]
        sh = [r["end_ratio"] for r in by(res, scale=s, depth=shallow)]
        if d and sh:
            pairs.append((s, mean(d), mean(sh)))
    if not pairs:
        return Verdict(claim, None, "needs finished ResNets of both depths at one scale.", False)
    text = "mean ‖F(x)‖ / ‖shortcut‖ after training by scale: " + "; ".join(
        f"{s:g}: {display('resnet', deep)} {d:.2f}, {display('resnet', shallow)} {sh:.2f}" for s, d, sh in pairs
    )
    return Verdict(claim, all(d < sh for _, d, sh in pairs), text + ".")
