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
reslab.train_run(reslab.TrainConfig(arch="resnet", depth=8, dataset="digits", iterations=5, batch_size=32), run,
                 log=lambda *_: None)
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
