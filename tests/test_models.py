import pytest
import torch

from reslab.errors import UserError
from reslab.models import BasicBlock, ModelConfig, PadShortcut, build_model, count_macs, count_parameters, parse_net

PAPER = {20: 269_722, 32: 464_154, 44: 658_586, 56: 853_018, 110: 1_727_962, 1202: 19_421_274}
MACS = {20: 40.55, 56: 125.49, 110: 252.89}


@pytest.mark.parametrize("depth", sorted(PAPER))
def test_parameter_counts_match_the_paper_and_plain_equals_resnet(depth):
    resnet = count_parameters(build_model(ModelConfig("resnet", depth, "A")))
    plain = count_parameters(build_model(ModelConfig("plain", depth)))
    assert resnet == PAPER[depth]
    assert plain == resnet


def test_option_b_adds_two_projections_and_c_adds_more():
    a = count_parameters(build_model(ModelConfig("resnet", 20, "A")))
    b = count_parameters(build_model(ModelConfig("resnet", 20, "B")))
    c = count_parameters(build_model(ModelConfig("resnet", 20, "C")))
    assert b - a == 2_752  # 16->32 and 32->64 1x1 convs with their BNs
    assert c > b


def test_preact_bottleneck_164_has_the_follow_up_papers_size():
    m = build_model(ModelConfig("preact-bottleneck", 164, "B"))
    assert count_parameters(m) == 1_703_258
    assert count_parameters(build_model(ModelConfig("preact", 110, "A"))) == PAPER[110]


@pytest.mark.parametrize("depth", sorted(MACS))
def test_macs_are_measured_and_equal_for_plain_and_resnet(depth):
    r = count_macs(build_model(ModelConfig("resnet", depth)))
    p = count_macs(build_model(ModelConfig("plain", depth)))
    assert r == p
    assert round(r / 1e6, 2) == MACS[depth]


def test_option_a_shortcut_is_the_identity_where_shapes_match_and_pads_zeros_in_the_middle():
    x = torch.randn(2, 16, 8, 8)
    assert torch.equal(PadShortcut(16, 16, 1)(x), x)
    y = PadShortcut(16, 32, 2)(x)
    assert y.shape == (2, 32, 4, 4)
    assert torch.equal(y[:, 8:24], x[:, :, ::2, ::2])  # the original channels sit in the middle
    assert y[:, :8].abs().sum() == 0 and y[:, 24:].abs().sum() == 0
    assert sum(p.numel() for p in PadShortcut(16, 32, 2).parameters()) == 0


def test_residual_block_is_relu_of_branch_plus_input():
    torch.manual_seed(0)
    block = BasicBlock(16, 16, 1, "A").eval()
    plain = BasicBlock(16, 16, 1, None).eval()
    plain.load_state_dict(block.state_dict())
    x = torch.randn(3, 16, 8, 8)
    branch = block.bn2(block.conv2(torch.relu(block.bn1(block.conv1(x)))))
    assert torch.allclose(block(x), torch.relu(branch + x), atol=1e-6)
    assert torch.allclose(plain(x), torch.relu(branch), atol=1e-6)


def test_plain_net_has_no_shortcuts_and_resnet_has_one_per_block():
    plain, resnet = build_model(ModelConfig("plain", 20)), build_model(ModelConfig("resnet", 20))
    assert all(b.shortcut is None for b in plain.blocks())
    assert len([b for b in resnet.blocks() if b.shortcut is not None]) == 9


@pytest.mark.parametrize("shape,classes", [((1, 28, 28), 10), ((1, 8, 8), 10), ((3, 32, 32), 100), ((3, 8, 8), 7)])
@pytest.mark.parametrize("arch", ["plain", "resnet", "preact"])
def test_other_inputs_and_class_counts(shape, classes, arch):
    m = build_model(ModelConfig(arch, 8, "A", num_classes=classes, in_channels=shape[0]))
    assert m(torch.randn(2, *shape)).shape == (2, classes)


def test_bottleneck_runs_and_counts():
    m = build_model(ModelConfig("preact-bottleneck", 11, "B"))
    assert m(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    assert count_macs(m) > 0


def test_bad_depth_names_the_nearest_valid_ones():
    with pytest.raises(UserError, match="6n\\+2.*14 and 20"):
        build_model(ModelConfig("resnet", 18))
    with pytest.raises(UserError, match="9n\\+2"):
        build_model(ModelConfig("preact-bottleneck", 21))


def test_he_initialisation_fan_out():
    torch.manual_seed(0)
    m = build_model(ModelConfig("resnet", 56))
    w = m.layer3[0].conv2.weight  # 64 out channels, 3x3: std sqrt(2 / (64 * 9))
    assert abs(w.std().item() - (2 / (64 * 9)) ** 0.5) < 0.002


def test_models_pickle():
    import pickle

    m = build_model(ModelConfig("resnet", 20))
    assert count_parameters(pickle.loads(pickle.dumps(m))) == PAPER[20]


def test_bad_depths_and_architectures_say_why():
    with pytest.raises(UserError, match="nearest valid depths are 20 and 26"):
        build_model(ModelConfig("resnet", 21))
    with pytest.raises(UserError, match="unknown architecture 'vgg'"):
        build_model(ModelConfig("vgg", 16))


def test_network_names_parse_and_bad_ones_say_why():
    assert parse_net("resnet-56") == ModelConfig("resnet", 56)
    assert parse_net("preact-bottleneck-164") == ModelConfig("preact-bottleneck", 164, "B")
    with pytest.raises(UserError, match="nearest valid depths are 20 and 26"):
        parse_net("resnet-21")
    for bad in ("resnet", "vgg-16", "resnet-x"):
        with pytest.raises(UserError, match="not a network name"):
            parse_net(bad)


def _pooled(arch: str, gamma: float, x: torch.Tensor) -> torch.Tensor:
    """The features the classifier sees, for a net built from seed 0 and given --block-gamma."""
    torch.manual_seed(0)
    m = build_model(ModelConfig(arch, 20))
    if gamma != 1:
        m.scale_block_gamma(gamma)
    feats = {}
    m.linear.register_forward_hook(lambda _m, inp, _out: feats.setdefault("x", inp[0]))
    m.train()(x)
    return feats["x"]


def test_block_gamma_only_rescales_a_plain_net_but_shrinks_a_residual_branch():
    torch.manual_seed(1)
    x = torch.randn(32, 3, 16, 16)
    # Plain: each next BN undoes the scale, so only the classifier's input is scaled, exactly by gamma.
    plain1, plain01 = _pooled("plain", 1.0, x), _pooled("plain", 0.1, x)
    assert torch.allclose(plain01, 0.1 * plain1, rtol=1e-2, atol=1e-4)  # BN eps aside
    # Residual: the branches add a tenth as much, so the stream stays near what the stem gives it.
    res1, res01 = _pooled("resnet", 1.0, x), _pooled("resnet", 0.1, x)
    assert res1.pow(2).mean().sqrt() > 1.5 * res01.pow(2).mean().sqrt()
    assert not torch.allclose(res01, 0.1 * res1, rtol=0.1)
    m = build_model(ModelConfig("preact-bottleneck", 29))
    m.scale_block_gamma(0.25)
    assert all(bool((b.last_bn.weight == 0.25).all()) for b in m.blocks())
