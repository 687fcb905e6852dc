"""The paper's degradation claims, checked against an experiment's measurements.

Each verdict is a sentence built from the numbers in the run directories, plus whether the
claim holds. A difference in training error counts only when it exceeds MARGIN (one percentage
point), so noise between two near-zero errors is not called degradation.
"""

from __future__ import annotations

from dataclasses import dataclass

from reslab.models import ARCHS, display
from reslab.schema import Verdict

MARGIN = 0.01


@dataclass
class Measured:
    """What the verdicts read of a run (a runs.RunRecord has the same attributes); a results
    file keeps these, so that its verdicts can be derived again from it."""

    name: str
    arch: str
    depth: int
    seed: int
    state: str
    metrics: list[dict]

    @classmethod
    def of(cls, r) -> Measured:
        return cls(r.name, r.arch, r.depth, r.seed, r.state, r.metrics[-1:])

    def to_json(self) -> dict:
        return {
            "name": self.name,
            "config": {"model": {"arch": self.arch, "depth": self.depth}, "train": {"seed": self.seed}},
            "status": {"state": self.state},
            "metrics": self.metrics,
        }

    @classmethod
    def from_json(cls, d: dict) -> Measured:
        model = d["config"]["model"]
        seed, state = d["config"]["train"]["seed"], d["status"]["state"]
        return cls(d["name"], model["arch"], model["depth"], seed, state, d["metrics"])


def mark(holds: bool | None, testable: bool = True) -> str:
    """A verdict's mark on the terminal."""
    if not testable:
        return "not testable here"
    return {True: "yes", False: "NO", None: "unclear"}[holds]


def pc(v: float) -> str:
    return f"{100 * v:.1f}%"


def finals_by_seed(all_runs: list, arch: str, depth: int) -> dict[int, dict]:
    """The final metrics row of each seed's finished run of arch-depth. A run is anything with
    arch, depth, seed, state and metrics (runs.RunRecord; the measured runs a results file keeps)."""
    return {
        r.seed: r.metrics[-1]
        for r in all_runs
        if r.arch == arch and r.depth == depth and r.state == "finished" and r.metrics
    }


def seeds_where(all_runs, arch, deep, shallow, better_deep: bool) -> tuple[int, int]:
    """(seeds where the deep net's training error is worse by > MARGIN (or not, if
    better_deep), seeds compared)."""
    a, b = finals_by_seed(all_runs, arch, deep), finals_by_seed(all_runs, arch, shallow)
    common = sorted(set(a) & set(b))
    if better_deep:
        hits = sum(a[s]["train_error"] <= b[s]["train_error"] + MARGIN for s in common)
    else:
        hits = sum(a[s]["train_error"] > b[s]["train_error"] + MARGIN for s in common)
    return hits, len(common)


# Training errors at or below this count as fitting the training set: no depth can do better.
FLOOR = 0.001


def next_step(status: str) -> str:
    """What to do about a network with no finished run, by why it has none."""
    if "diverged" in status:
        return "it diverged, and running it again would diverge again: lower --lr or turn on --warmup."
    if "failed" in status:
        return "its run's status message says why it failed."
    return "run the same command again to finish it."


def depth_verdict(arch: str, depths: list[int], rows: dict, all_runs: list, wants_degradation: bool) -> Verdict:
    """Whether depth degrades `arch`: the deepest against the shallowest net, every step between
    them, and on how many seeds; unclear when the seeds disagree or both fit the training set."""
    err = {d: rows[(arch, d)]["train_error_mean"] for d in depths}
    lo, hi = rows[(arch, depths[0])], rows[(arch, depths[-1])]
    worse = err[depths[-1]] - err[depths[0]] > MARGIN
    worse_steps = [(a, b) for a, b in zip(depths, depths[1:]) if err[b] - err[a] > MARGIN]
    deep, shallow = display(arch, depths[-1]), display(arch, depths[0])
    numbers = (
        f"{deep} ends at {pc(err[depths[-1]])} training error against {pc(err[depths[0]])} for {shallow} "
        f"(test error {pc(hi['test_error_mean'])} against {pc(lo['test_error_mean'])})"
    )
    if len(depths) > 2:
        numbers += "; training error by depth " + ", ".join(f"{d}: {pc(err[d])}" for d in depths)
    if wants_degradation:
        hits, n = seeds_where(all_runs, arch, depths[-1], depths[0], better_deep=False)
        claim = f"Deeper plain nets degrade ({shallow} vs {deep})"
        if not worse:
            return Verdict(claim, False, f"{numbers}: no degradation at this budget.")
        text = (
            f"{numbers}: degradation observed on {hits} of {n} seeds. The deeper plain net is worse on the "
            "training set itself, so this is not overfitting."
        )
        if hi["test_error_mean"] <= lo["test_error_mean"]:
            text += " (Its test error is not higher here.)"
        if len(depths) > 2 and len(worse_steps) < len(depths) - 1:
            text += " Not every deeper step is worse, though."
        if 2 * hits <= n:
            return Verdict(claim, None, text + " That is on the mean only: most seeds do not show it.")
        return Verdict(claim, True, text)
    hits, n = seeds_where(all_runs, arch, depths[-1], depths[0], better_deep=True)
    claim = f"Deeper {'residual' if arch == 'resnet' else ARCHS[arch].title} nets do not degrade ({shallow} vs {deep})"
    if max(err.values()) <= FLOOR:
        return floor_verdict(claim, numbers, arch, depths[-1], depths[0], all_runs)
    if worse or worse_steps:
        steps = ", ".join(f"{display(arch, b)} is worse than {display(arch, a)}" for a, b in worse_steps)
        return Verdict(claim, False, f"{numbers}: the deeper residual net is worse here too ({steps or 'overall'}).")
    text = f"{numbers}: no degradation (on {hits} of {n} seeds)"
    text += "; the deeper net is also better on the test set." if hi["test_error_mean"] < lo["test_error_mean"] else "."
    if 2 * hits <= n:
        return Verdict(claim, None, text + " That is on the mean only: most seeds do not show it.")
    return Verdict(claim, True, text)


# At the floor, a deeper net's final training loss at most this far (in nats) above the shallower
# one's counts as fitting the training set as well: 0.01 nats is a mean probability of the right
# class within about 1% of the other net's. (A ratio would call 0.0026 against 0.0001 a degradation.)
LOSS_MARGIN = 0.01


def floor_verdict(claim: str, numbers: str, arch: str, deep: int, shallow: int, all_runs: list) -> Verdict:
    """Both nets fit the training set (0% error), so the error cannot separate them: the final
    training loss does. The deeper net does not degrade if its loss is at most LOSS_MARGIN nats
    above the shallower one's, on most seeds."""
    a, b = finals_by_seed(all_runs, arch, deep), finals_by_seed(all_runs, arch, shallow)
    seeds = sorted(
        s for s in set(a) & set(b) if a[s].get("train_loss") is not None and b[s].get("train_loss") is not None
    )
    if not seeds:
        return Verdict(claim, None, f"{numbers}: all fit the training set, and no training loss was recorded.")
    hits = sum(a[s]["train_loss"] <= b[s]["train_loss"] + LOSS_MARGIN for s in seeds)
    mean = lambda d: sum(d[s]["train_loss"] for s in seeds) / len(seeds)  # noqa: E731
    text = (
        f"{numbers}: both fit the training set, so the error cannot separate them; their final training loss "
        f"does: {display(arch, deep)} {mean(a):.4f}, {display(arch, shallow)} {mean(b):.4f} "
        f"(at most {LOSS_MARGIN:g} higher counts as fitting it as well; so on {hits} of {len(seeds)} seeds)."
    )
    if 2 * hits == len(seeds):
        return Verdict(claim, None, text + " The seeds disagree.")
    return Verdict(claim, 2 * hits > len(seeds), text)


def convergence_verdict(d: int, p: dict, r: dict) -> Verdict:
    """Which of the two nets at depth `d` reaches the threshold first; a tie at the same
    evaluation is unclear, and a ResNet that never gets there is a NO, never left out."""
    pr, rr, t = p["iterations_to_reach"], r["iterations_to_reach"], 100 * p["reach_threshold"]
    res, plain = display("resnet", d), display("plain", d)
    claim = f"Residual nets converge faster (depth {d})"
    if rr is None and pr is None:
        return Verdict(claim, None, f"Neither {res} nor {plain} reaches {t:g}% training error.")
    if rr is None:
        return Verdict(
            claim, False, f"{plain} reaches {t:g}% training error after {pr:.0f} iterations; {res} never does."
        )
    if pr is None:
        return Verdict(
            claim, True, f"{res} reaches {t:g}% training error after {rr:.0f} iterations; {plain} never does."
        )
    text = f"{res} reaches {t:g}% training error after {rr:.0f} iterations, {plain} after {pr:.0f}."
    if rr == pr:
        return Verdict(claim, None, text + " A tie at the resolution of the evaluations.")
    return Verdict(claim, rr < pr, text)


def degradation_verdicts(summary: list[dict], all_runs: list) -> list[Verdict]:
    rows = {(r["arch"], r["depth"]): r for r in summary if r["runs"]}
    out = [
        Verdict(
            f"{display(r['arch'], r['depth'])} has no finished run",
            None,
            f"its status: {r['status']}. The claims below leave it out; {next_step(r['status'])}",
        )
        for r in summary
        if not r["runs"]
    ]
    for arch, spec in ARCHS.items():  # plain nets are expected to degrade with depth, residual ones not
        depths = sorted(d for a, d in rows if a == arch)
        if len(depths) >= 2:
            out.append(depth_verdict(arch, depths, rows, all_runs, not spec.residual))

    common = sorted(d for a, d in rows if a == "plain" and ("resnet", d) in rows)
    if common:
        d = common[-1]
        p, r = rows[("plain", d)], rows[("resnet", d)]
        holds = r["train_error_mean"] + MARGIN < p["train_error_mean"]
        text = (
            f"At depth {d} the residual net ends at {pc(r['train_error_mean'])} training error and "
            f"{pc(r['test_error_mean'])} test error, the plain net at {pc(p['train_error_mean'])} and "
            f"{pc(p['test_error_mean'])}."
        )
        residual_ok = next((v.holds for v in out if v.claim.startswith("Deeper residual")), None)
        if not holds:
            text += " No clear advantage at this budget."
        elif residual_ok is False:
            text += " The shortcuts reduce the degradation, but at this budget do not remove it."
        elif residual_ok is None:
            text += " Whether deeper residual nets still degrade is not settled here (see above)."
        else:
            text += " Residual learning removes the degradation."
        out.append(Verdict(f"Shortcuts help at depth {d}", holds, text))
        out.append(convergence_verdict(d, p, r))
        out.append(cost_verdict(rows, common))
    return out


def cost_verdict(rows: dict, depths: list[int]) -> Verdict:
    extra_params = {d: rows[("resnet", d)]["parameters"] - rows[("plain", d)]["parameters"] for d in depths}
    extra_macs = {d: rows[("resnet", d)]["macs"] - rows[("plain", d)]["macs"] for d in depths}
    free = not any(extra_params.values()) and not any(extra_macs.values())
    d = depths[-1]
    if free:
        text = (
            f"The identity shortcuts add 0 parameters and 0 multiply-accumulates at every depth compared: "
            f"{display('plain', d)} and {display('resnet', d)} both have {rows[('plain', d)]['parameters']:,} "
            f"parameters and {rows[('plain', d)]['macs'] / 1e6:.2f} M MACs per image."
        )
    else:
        text = (
            f"The shortcuts here add {extra_params[d]:,} parameters and {extra_macs[d] / 1e6:.2f} M MACs at "
            f"depth {d} (projection shortcuts)."
        )
    return Verdict("Identity shortcuts are free", free, text)
