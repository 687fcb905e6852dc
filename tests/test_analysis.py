import subprocess
import sys

import pytest
import torch

from reslab.analysis import construct, gradients, identity, landscape, lesion, responses
from reslab.models import ARCHS, ModelConfig, build_model


def trained_like(arch, depth, seed=0, shape=(3, 8, 8)):
    """A net with non-trivial BN statistics and scales, as after training (no training needed)."""
    torch.manual_seed(seed)
    m = build_model(ModelConfig(arch, depth, ARCHS[arch].default_shortcut, in_channels=shape[0]))
    with torch.no_grad():
        for mod in m.modules():
            if isinstance(mod, torch.nn.BatchNorm2d):
                mod.weight.uniform_(0.3, 1.5)
                mod.bias.uniform_(-0.2, 0.2)
                mod.running_mean.uniform_(-0.5, 0.5)
                mod.running_var.uniform_(0.5, 2.0)
    return m.eval()


@pytest.mark.parametrize("arch", list(ARCHS))
def test_constructed_network_equals_its_source(arch):
    """Every registered architecture's block knows how to become an identity."""
    step = 3 * ARCHS[arch].layers_per_block  # depth 6n+2 or 9n+2
    shallow = trained_like(arch, step + 2)
    deep, added = construct.construct_deeper(shallow, 3 * step + 2)
    assert len(added) == 6 and deep.config.depth == 3 * step + 2
    x = torch.randn(32, 3, 8, 8)
    with torch.no_grad():
        assert (deep(x) - shallow(x)).abs().max().item() < 1e-5
    if arch == "plain":  # the identity layers are really there and really identities
        blk = deep.layer2[2]
        assert blk.conv1.weight[:, :, 1, 1].diagonal().eq(1).all() and blk.conv1.weight.abs().sum() == 32


def test_constructed_deeper_is_not_just_the_source_in_train_mode():
    shallow = trained_like("plain", 8)
    deep, _ = construct.construct_deeper(shallow, 14)
    x = torch.randn(32, 3, 8, 8)
    with torch.no_grad():
        assert (deep.train()(x) - shallow.train()(x)).abs().max() > 1e-3  # exact only in eval mode


def test_lesioning_a_block_with_zero_branch_changes_nothing():
    m = trained_like("resnet", 14)
    m.layer2[1].make_identity()
    x, y = torch.randn(64, 3, 8, 8), torch.randint(0, 10, (64,))
    with torch.no_grad():
        full = m(x)
        index = len(m.layer1) + 1
        assert torch.allclose(lesion.delete_blocks(m, {index})(x), full, atol=1e-6)
        assert not torch.allclose(lesion.delete_blocks(m, {index - 1})(x), full, atol=1e-3)
    single = lesion.single_deletions(m, x, y)
    assert len(single) == 6 and [s["downsampling"] for s in single] == [False, False, True, False, True, False]


def test_plain_blocks_that_change_shape_cannot_be_deleted():
    m = trained_like("plain", 14)
    single = lesion.single_deletions(m, torch.randn(8, 3, 8, 8), torch.randint(0, 10, (8,)))
    assert [s["error"] is None for s in single] == [False, False, True, False, True, False]
    ks = lesion.random_deletions(m, torch.randn(8, 3, 8, 8), torch.randint(0, 10, (8,)), [1, 2, 5], samples=3)
    assert [k["k"] for k in ks] == [1, 2]  # only 4 blocks are removable


def test_filter_normalised_direction_has_the_filter_norms_of_the_weights():
    m = trained_like("resnet", 8)
    d = landscape.filter_normalized_direction(m, torch.Generator().manual_seed(0))
    for name, w in m.named_parameters():
        if w.dim() > 1:
            assert torch.allclose(d[name].flatten(1).norm(dim=1), w.detach().flatten(1).norm(dim=1), rtol=1e-5)
        else:
            assert d[name].abs().sum() == 0


def test_landscape_surface_restores_the_weights_and_is_lowest_near_a_trained_point():
    m = trained_like("resnet", 8)
    before = {k: v.clone() for k, v in m.state_dict().items()}
    x, y = torch.randn(64, 3, 8, 8), torch.randint(0, 10, (64,))
    d = landscape.filter_normalized_direction(m, torch.Generator().manual_seed(0))
    losses = landscape.surface(m, x, y, [d], [[-1.0], [0.0], [1.0]])
    assert all(torch.equal(before[k], v) for k, v in m.state_dict().items())
    assert losses[1] == pytest.approx(landscape.loss_at(m, x, y))


def test_layer_responses_match_a_direct_computation():
    m = trained_like("resnet", 8)
    x = torch.randn(50, 3, 8, 8)
    layers = responses.layer_responses(m, x, batch_size=16)
    assert len(layers) == 7  # stem + 3 blocks x 2 convs
    with torch.no_grad():
        out = m.layer2[0].bn2(
            m.layer2[0].conv2(torch.relu(m.layer2[0].bn1(m.layer2[0].conv1(m.layer1(torch.relu(m.bn1(m.conv1(x))))))))
        )
    assert layers[4]["std"] == pytest.approx(out.std(unbiased=False).item(), rel=1e-4)
    assert layers[4]["std_per_channel"] == pytest.approx(
        out.transpose(0, 1).flatten(1).std(1, unbiased=False).mean().item(), rel=1e-4
    )
    assert layers[4]["gamma"] == pytest.approx(m.layer2[0].bn2.weight.abs().mean().item())


def test_response_findings_compare_means():
    mk = lambda arch, depth, v: {"arch": arch, "depth": depth, "layers": [{"std": v}]}  # noqa: E731
    f = responses.findings([mk("plain", 20, 1.0), mk("resnet", 20, 0.5), mk("resnet", 56, 0.4)])
    assert [x["holds"] for x in f] == [True, True]
    f = responses.findings([mk("plain", 20, 0.3), mk("resnet", 20, 0.5), mk("resnet", 56, 0.6)])
    assert [x["holds"] for x in f] == [False, False]
    f = responses.findings([mk("plain", 20, 1.0), mk("resnet", 20, 0.99), mk("resnet", 56, 0.98)])
    assert [x["holds"] for x in f] == [None, None]  # within 5%: unclear, not a finding


def test_gradient_norms_and_shattering():
    m = trained_like("plain", 8)
    x, y = torch.randn(16, 3, 8, 8), torch.randint(0, 10, (16,))
    norms = gradients.conv_gradient_norms(m, x, y)
    assert len(norms) == 7 and all(n > 0 for n in norms)
    assert torch.equal(m.bn1.running_mean, trained_like("plain", 8).bn1.running_mean)  # untouched
    c = gradients.gradient_correlation(m, x[0], points=16)
    assert -1 <= c <= 1
    # a linear function has the same gradient everywhere: correlation 1
    lin = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 10))
    assert gradients.gradient_correlation(lin, x[0], points=8) == pytest.approx(1.0, abs=1e-5)


def test_identity_learning_residual_beats_plain_when_deep():
    plain = identity.identity_error("plain", 6, steps=150)
    residual = identity.identity_error("residual", 6, steps=150)
    assert residual < plain


def test_importing_reslab_and_drawing_leave_matplotlib_as_it_was(tmp_path):
    """A notebook's own plots keep their backend and settings: with a non-Agg backend set
    beforehand, a tiny training run, an analysis and a figure leave both as they were, pyplot is
    never imported, and the figure comes back as a Figure."""
    script = f"""
import sys, matplotlib
from pathlib import Path
matplotlib.use("svg")  # a notebook's choice, not Agg
before = matplotlib.rcParams.copy()  # copy() reads the backend without resolving it (which imports pyplot)
import reslab
run = Path({str(tmp_path)!r}) / "r"
reslab.train_run(reslab.TrainConfig(arch="resnet", depth=8, dataset="digits", iterations=5, batch_size=32), run)
reslab.analysis.load("responses").analyze([run], out=run)
fig = reslab.figures.error_curves([reslab.load_run(run)])
assert type(fig).__name__ == "Figure", type(fig)
assert "matplotlib.pyplot" not in sys.modules
after = matplotlib.rcParams.copy()
changed = sorted(k for k in before if dict.__getitem__(before, k) != dict.__getitem__(after, k))
assert not changed, changed
assert dict.__getitem__(after, "backend") == "svg"
print("unchanged")
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.stdout.strip() == "unchanged", done.stderr
    assert (tmp_path / "r" / "figures" / "responses.png").read_bytes().startswith(b"\x89PNG")


# ---------------------------------------------------------------------------------------------
# issue 17, item 3: the construct finding says what was measured


@pytest.mark.parametrize(
    "diff,same,words",
    [
        (0.0, True, "computes the same outputs"),
        (0.3, True, "computes different outputs (largest logit difference 3.0e-01, the same predictions"),
        (2.0, False, "and changes some predictions"),
    ],
)
def test_construct_finding_follows_the_measured_difference(tmp_path, diff, same, words):
    from test_experiment import fake_run

    from reslab.analysis.construct import section as construct_section

    fake_run(tmp_path, "plain", 8, 0, [0.1], 0.2)
    result = {
        "arch": "plain", "depth": 14, "source_label": "plain-8", "identity_blocks": 1, "max_abs_difference": diff,
        "same_predictions": same, "source_train_error": 0.1, "constructed_train_error": 0.1, "scratch_train_error": 0.3,
    }  # fmt: skip
    html = construct_section({"results": [result]}, tmp_path)
    assert words in html
    assert ("computes the same outputs" in html) == (diff == 0.0)


# ---------------------------------------------------------------------------------------------
# 11. long analyses show how far they are (a progress bar with ETA that ends at its total)


def test_long_analyses_advance_a_progress_bar_to_its_total(monkeypatch, trained):
    from reslab.analysis import load

    bars = []

    class Bar:
        def __init__(self, total, desc):
            self.total, self.desc, self.n, self.closed = total, desc, 0, False
            bars.append(self)

        def update(self, n=1):
            self.n += n

        def close(self):
            self.closed = True

    for name in ("lesion", "landscape", "gradients", "identity"):
        monkeypatch.setattr(load(name), "progress_bar", Bar)
    out = trained.parent / "analysis-out"
    load("lesion").analyze([trained], out, limit=50, samples=2)
    load("landscape").analyze([trained], out, resolution=3, images=50)
    load("gradients").analyze([trained], out, depths=[8], images=8, points=4)
    load("identity").analyze(out, max_k=2, steps=2)
    assert [b.desc.split()[0] for b in bars] == ["lesion", "landscape", "gradients", "identity"]
    assert all(b.closed and b.n == b.total > 0 for b in bars), [(b.desc, b.n, b.total) for b in bars]


# ---------------------------------------------------------------------------------------------
# issue 17, item 1: learning the identity, judged at equal convolutions and over depth


def identity_result(plain, residual):
    rows = lambda errors, per: [{"k": c // per, "convs": c, "error": e} for c, e in zip((2, 4, 6, 8), errors)]  # noqa: E731
    return {"steps": 10, "plain": rows(plain, 1), "residual": rows(residual, 2)}


@pytest.mark.parametrize(
    "plain,residual,holds",
    [
        ([0.01, 0.11, 0.39, 0.50], [0.002, 0.003, 0.011, 0.014], True),  # measured shape (lr 0.01, 400 steps)
        ([0.01, 0.02, 0.02, 0.03], [0.02, 0.03, 0.03, 0.04], False),
        ([0.01, 0.11, 0.05, 0.50], [0.002, 0.05, 0.011, 0.3], None),
    ],
)
def test_identity_finding_follows_the_trend(plain, residual, holds):
    from reslab.analysis.identity import finding

    f = finding(identity_result(plain, residual))
    assert f["holds"] is holds, f["text"]


def test_identity_compares_equal_convolutions_on_one_thread(tmp_path):
    from reslab.analysis import load

    threads = torch.get_num_threads()
    r = load("identity").analyze(tmp_path, max_k=2, steps=2)
    assert [(p["convs"], p["k"], q["k"]) for p, q in zip(r["plain"], r["residual"])] == [(2, 2, 1), (4, 4, 2)]
    assert torch.get_num_threads() == threads  # restored


def test_identity_default_learning_rate_is_the_documented_one():
    import inspect

    from reslab.analysis import identity

    assert inspect.signature(identity.identity_error).parameters["lr"].default == 0.01
    assert "lr 0.01" in identity.__doc__


# ---------------------------------------------------------------------------------------------
# issue 17, item 5: shattering measured on several lines, with its spread


def test_gradient_correlation_is_averaged_over_lines_with_its_spread(trained):
    from reslab.analysis import load

    r = load("gradients").analyze([trained], trained.parent / "grad-out", depths=[8], images=8, points=8, lines=3)
    for row in r["shattering"]["rows"]:
        assert len(row["values"]) == 3 and len(set(row["values"])) == 3  # three different lines
        assert row["correlation"] == pytest.approx(sum(row["values"]) / 3)
        assert row["correlation_std"] > 0
    assert len(r["runs"][0]["correlation_trained"]["values"]) == 3
