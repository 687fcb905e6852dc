"""Import of the common PyTorch CIFAR ResNet checkpoints, checked against an independent
re-implementation of that code's architecture (written here from its description)."""

import hashlib
import io
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from reslab import runs
from reslab.errors import UserError
from reslab.evaluate import load_run_model
from reslab.pretrained import import_checkpoint

SHARED = Path(__file__).resolve().parents[2] / "shared"


class RefBlock(nn.Module):
    def __init__(self, cin, planes, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.pad = stride != 1 or cin != planes
        self.planes = planes

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        short = F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, self.planes // 4, self.planes // 4)) if self.pad else x
        return F.relu(out + short)


class RefResNet(nn.Module):
    def __init__(self, n):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        cin, stages = 16, []
        for planes, stride in ((16, 1), (32, 2), (64, 2)):
            blocks = []
            for j in range(n):
                blocks.append(RefBlock(cin, planes, stride if j == 0 else 1))
                cin = planes
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = stages
        self.linear = nn.Linear(64, 10)

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer3(self.layer2(self.layer1(out)))
        return self.linear(F.adaptive_avg_pool2d(out, 1).flatten(1))


def randomised(model):
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.3, 0.3)
                m.running_mean.uniform_(-0.3, 0.3)
                m.running_var.uniform_(0.5, 1.5)
    return model.eval()


def save_like_original(model, path):
    state = {f"module.{k}": v for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}
    torch.save({"best_prec1": 91.5, "state_dict": state}, path)


def test_import_gives_exactly_the_original_predictions(tmp_path):
    torch.manual_seed(0)
    ref = randomised(RefResNet(3))
    save_like_original(ref, tmp_path / "resnet20.th")
    config = import_checkpoint(tmp_path / "resnet20.th", tmp_path / "run")
    assert config.model.depth == 20 and config.resolved.parameters == 269_722
    assert config.imported["extra"]["best_prec1"] == pytest.approx(91.5)
    assert config.resolved.normalization["mean"] == [0.485, 0.456, 0.406]
    model, _ = load_run_model(tmp_path / "run")
    x = torch.randn(16, 3, 32, 32)
    with torch.no_grad():
        assert (model(x) - ref(x)).abs().max() < 1e-5


def test_wrong_padding_would_show(tmp_path):
    """Guard for the test above: a net padding zeros on one side only differs from the original."""
    torch.manual_seed(0)
    ref = randomised(RefResNet(3))
    save_like_original(ref, tmp_path / "r.th")
    import_checkpoint(tmp_path / "r.th", tmp_path / "run")
    model, _ = load_run_model(tmp_path / "run")
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        assert (model(x) - ref(x)).abs().max() < 1e-5
        shortcut = model.layer2[0].shortcut
        shortcut.before, shortcut.after = 0, 16
        assert (model(x) - ref(x)).abs().max() > 1e-3


def test_import_of_the_wrong_shape_is_refused(tmp_path):
    torch.manual_seed(0)
    state = {f"module.{k}": v for k, v in RefResNet(3).state_dict().items()}
    state["module.layer2.0.shortcut.0.weight"] = torch.zeros(32, 16, 1, 1)  # an option-B net
    torch.save({"state_dict": state}, tmp_path / "b.th")
    with pytest.raises(UserError, match="unexpected tensors.*shortcut"):
        import_checkpoint(tmp_path / "b.th", tmp_path / "run")
    state = {k: v for k, v in state.items() if "shortcut" not in k}
    state["module.layer1.0.conv2.weight"] = torch.zeros(16, 16, 5, 5)
    torch.save({"state_dict": state}, tmp_path / "w.th")
    with pytest.raises(UserError, match="wrong shapes.*layer1.0.conv2"):
        import_checkpoint(tmp_path / "w.th", tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_a_checkpoint_that_runs_code_is_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            return (exec, ("open('" + str(tmp_path / "pwned") + "', 'w').write('x')",))

    buf = io.BytesIO()
    pickle.dump({"state_dict": Evil()}, buf)
    (tmp_path / "evil.th").write_bytes(buf.getvalue())
    with pytest.raises(UserError, match="cannot be loaded safely"):
        import_checkpoint(tmp_path / "evil.th", tmp_path / "run")
    assert not (tmp_path / "pwned").exists()


@pytest.mark.skipif(
    not (SHARED / "weights" / "resnet20-12fca82f.th").exists(),
    reason="../shared/weights (pretrained checkpoints) is not on this machine",
)
def test_real_checkpoint_matches_the_reference_code(tmp_path):
    path = SHARED / "weights" / "resnet20-12fca82f.th"
    ref = RefResNet(3)
    state = torch.load(path, map_location="cpu", weights_only=True)["state_dict"]
    ref.load_state_dict({k.removeprefix("module."): v for k, v in state.items()}, strict=False)
    ref.eval()
    import_checkpoint(path, tmp_path / "run")
    model, _ = load_run_model(tmp_path / "run")
    x = torch.randn(32, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(model(x).argmax(1), ref(x).argmax(1))
        assert (model(x) - ref(x)).abs().max() < 1e-4


@pytest.mark.skipif(
    not (SHARED / "data" / "cifar10-jpeg.tar.gz").exists()
    or not (SHARED / "weights" / "resnet20-12fca82f.th").exists(),
    reason="../shared data and weights are not on this machine",
)
def test_real_resnet20_scores_about_80_percent_on_jpeg_cifar10(tmp_path):
    from PIL import Image

    from reslab.evaluate import error_rate

    images, labels = [], []
    with tarfile.open(SHARED / "data" / "cifar10-jpeg.tar.gz") as tar:
        classes, per_class = {}, {}
        for member in tar:
            parts = member.name.split("/")
            if member.isfile() and "test" in parts:
                cls = parts[-2]
                classes.setdefault(cls, len(classes))
                if per_class.get(cls, 0) < 100:
                    per_class[cls] = per_class.get(cls, 0) + 1
                    images.append(np.asarray(Image.open(tar.extractfile(member)).convert("RGB")))
                    labels.append(cls)
    order = sorted(classes)
    x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float() / 255
    y = torch.tensor([order.index(c) for c in labels])
    import_checkpoint(SHARED / "weights" / "resnet20-12fca82f.th", tmp_path / "run")
    model, config = load_run_model(tmp_path / "run")
    norm = config.resolved.normalization
    x = (x - torch.tensor(norm["mean"]).view(1, 3, 1, 1)) / torch.tensor(norm["std"]).view(1, 3, 1, 1)
    accuracy = 1 - error_rate(model, x, y)
    assert 0.75 < accuracy < 0.88, accuracy  # ~81% on all 10,000; far lower if padding or normalisation were wrong


def test_a_named_checkpoint_is_fetched_once_hash_checked_and_offline_is_one_sentence(tmp_path, monkeypatch, capsys):
    from reslab import data, pretrained
    from reslab.cli import main

    torch.manual_seed(0)
    release = tmp_path / "release"
    release.mkdir()
    save_like_original(randomised(RefResNet(3)), release / "resnet20-test.th")
    sha = data.md5_of(release / "resnet20-test.th", "sha256")
    monkeypatch.setattr(pretrained, "SOURCE", release.as_uri() + "/")
    monkeypatch.setitem(pretrained.NAMED, "resnet20", ("resnet20-test.th", sha))
    monkeypatch.setattr(data, "DEFAULT_DATA_DIR", tmp_path / "cache")
    assert main(["import", "resnet20", "--out", str(tmp_path / "r20")]) == 0
    assert "downloading" in capsys.readouterr().out
    assert runs.read_config(tmp_path / "r20").model.depth == 20
    (release / "resnet20-test.th").unlink()  # offline from now on: the cached copy serves
    assert main(["import", "resnet20", "--out", str(tmp_path / "again")]) == 0
    assert "downloading" not in capsys.readouterr().out
    (tmp_path / "cache" / "pretrained" / "resnet20-test.th").write_bytes(b"damaged")
    assert main(["import", "resnet20", "--out", str(tmp_path / "offline")]) == 2
    err = capsys.readouterr().err
    assert "could not download" in err and "put it at" in err and not (tmp_path / "offline").exists()


def test_what_a_checkpoint_says_of_itself_is_data_not_provenance(tmp_path, capsys):
    """A file's own 'file' and 'sha256' entries cannot forge reslab's; odd entries are left out
    before anything is written, so the run reads back and reports."""
    from reslab.cli import main
    from reslab.runs import read_config

    torch.manual_seed(0)
    state = {f"module.{k}": v for k, v in RefResNet(1).state_dict().items() if not k.endswith("num_batches_tracked")}
    torch.save({"state_dict": state, "file": "/etc/forged", "sha256": "0" * 64, "best_prec1": float("nan"),
                "note": "x" * 20_000, "epochs": 182}, tmp_path / "spoof.th")  # fmt: skip
    assert main(["import", str(tmp_path / "spoof.th"), "--out", str(tmp_path / "run")]) == 0
    imported = read_config(tmp_path / "run").imported
    assert imported["file"] == str((tmp_path / "spoof.th").resolve())
    assert imported["sha256"] == hashlib.sha256((tmp_path / "spoof.th").read_bytes()).hexdigest()
    assert imported["extra"] == {"file": "/etc/forged", "sha256": "0" * 64, "epochs": 182}
    assert "left out of the import" in capsys.readouterr().err
    assert main(["report", str(tmp_path / "run")]) == 0


@pytest.mark.parametrize(
    "flags, phrase",
    [
        (["--std", "0,0,0"], "--std positive"),
        (["--std", "nan,1,1"], "must be finite"),
        (["--mean", "inf,0,0"], "must be finite"),
        (["--dataset", "nosuchdata"], "unknown dataset 'nosuchdata'"),
    ],
)
def test_bad_normalisation_or_dataset_is_refused_at_import(tmp_path, capsys, flags, phrase):
    from reslab.cli import main

    save_like_original(RefResNet(1), tmp_path / "r.th")
    assert main(["import", str(tmp_path / "r.th"), "--out", str(tmp_path / "run"), *flags]) == 2
    assert phrase in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_an_unknown_name_lists_the_names_and_a_pickle_gives_one_sentence(tmp_path, capsys):
    from reslab.cli import main

    assert main(["import", "resnet110", "--out", str(tmp_path / "run")]) == 2
    assert "resnet20, resnet32, resnet44, resnet56" in capsys.readouterr().err
    import pickle

    (tmp_path / "raw.pkl").write_bytes(pickle.dumps({"a": 1}))
    assert main(["import", str(tmp_path / "raw.pkl"), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Warning" not in err
