import gzip
import os
import pickle
import struct

import numpy as np
import pytest
import torch

from reslab import data
from reslab.config import TrainConfig
from reslab.data import load_dataset, prepare
from reslab.errors import UserError


def write_cifar10(root, n_per_batch=20, seed=0):
    """A miniature cifar-10-batches-py folder in the official pickle format."""
    g = np.random.default_rng(seed)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    expected = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        x = g.integers(0, 256, (n_per_batch, 3072), dtype=np.uint8)
        y = list(g.integers(0, 10, n_per_batch))
        with open(folder / name, "wb") as f:
            pickle.dump({b"data": x, b"labels": y, b"batch_label": name.encode()}, f)
        expected[name] = (x, y)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({b"label_names": [f"c{i}".encode() for i in range(10)]}, f)
    return folder, expected


def test_cifar10_pickle_batches(tmp_path):
    _, expected = write_cifar10(tmp_path)
    ds = load_dataset("cifar10", tmp_path, download_ok=False)
    assert ds.train_x.shape == (100, 3, 32, 32) and ds.train_x.dtype == torch.uint8
    assert ds.test_x.shape == (20, 3, 32, 32)
    x, y = expected["data_batch_1"]
    assert np.array_equal(ds.train_x[0].numpy(), x[0].reshape(3, 32, 32))  # channel-major rows
    assert ds.train_y[:20].tolist() == y
    assert ds.classes[3] == "c3"


def test_cifar100_pickle(tmp_path):
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    g = np.random.default_rng(1)
    for name, n in (("train", 30), ("test", 10)):
        with open(folder / name, "wb") as f:
            pickle.dump(
                {b"data": g.integers(0, 256, (n, 3072), dtype=np.uint8), b"fine_labels": list(g.integers(0, 100, n))}, f
            )
    ds = load_dataset("cifar100", tmp_path, download_ok=False)
    assert ds.num_classes == 100 and len(ds.train_y) == 30


def test_missing_data_offline_says_where_to_put_it(tmp_path):
    with pytest.raises(UserError, match="cifar-10-batches-py"):
        load_dataset("cifar10", tmp_path, download_ok=False)


def test_truncated_pickle_batch_is_named(tmp_path):
    folder, _ = write_cifar10(tmp_path)
    raw = (folder / "data_batch_3").read_bytes()
    (folder / "data_batch_3").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(UserError, match="data_batch_3"):
        load_dataset("cifar10", tmp_path, download_ok=False)


def test_pickle_that_runs_code_is_refused(tmp_path):
    folder, _ = write_cifar10(tmp_path)

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    with open(folder / "test_batch", "wb") as f:
        pickle.dump({b"data": Evil(), b"labels": []}, f)
    with pytest.raises(UserError, match="refusing"):
        load_dataset("cifar10", tmp_path, download_ok=False)


def test_labels_out_of_range(tmp_path):
    folder, _ = write_cifar10(tmp_path)
    with open(folder / "test_batch", "wb") as f:
        pickle.dump({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 12]}, f)
    with pytest.raises(UserError, match="labels must lie in 0..9"):
        load_dataset("cifar10", tmp_path, download_ok=False)


def write_idx(path, array, gz=False):
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    raw = header + array.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(raw) if gz else raw)


@pytest.mark.parametrize("gz", [False, True])
def test_idx_files(tmp_path, gz):
    g = np.random.default_rng(0)
    folder = tmp_path / "mnist"
    folder.mkdir()
    arrays = {
        "train-images-idx3-ubyte": g.integers(0, 256, (12, 28, 28)),
        "train-labels-idx1-ubyte": g.integers(0, 10, 12),
        "t10k-images-idx3-ubyte": g.integers(0, 256, (5, 28, 28)),
        "t10k-labels-idx1-ubyte": g.integers(0, 10, 5),
    }
    for stem, a in arrays.items():
        write_idx(folder / (stem + (".gz" if gz else "")), a, gz)
    ds = load_dataset("mnist", tmp_path, download_ok=False)
    assert ds.train_x.shape == (12, 1, 28, 28)
    assert np.array_equal(ds.train_x[:, 0].numpy(), arrays["train-images-idx3-ubyte"])
    assert ds.test_y.tolist() == arrays["t10k-labels-idx1-ubyte"].tolist()
    assert not ds.augment  # digits and clothes are not mirrored


def test_truncated_idx_is_refused(tmp_path):
    p = tmp_path / "x-idx3-ubyte"
    write_idx(p, np.zeros((4, 28, 28)))
    p.write_bytes(p.read_bytes()[:-10])
    with pytest.raises(UserError, match="truncated"):
        data.read_idx(p)
    p.write_bytes(b"\x00\x00\x09\x03")
    with pytest.raises(UserError, match="magic"):
        data.read_idx(p)


def write_image_folder(root, n=3, size=(10, 12), fmt="png"):
    from PIL import Image

    g = np.random.default_rng(0)
    for split in ("train", "test"):
        for cls in ("cat", "dog"):
            (root / split / cls).mkdir(parents=True)
            for i in range(n):
                Image.fromarray(g.integers(0, 256, (*size, 3), dtype=np.uint8)).save(root / split / cls / f"{i}.{fmt}")


def test_image_folder_is_decoded_and_cached_in_the_user_cache(tmp_path, caplog, monkeypatch):
    from reslab.data import folder

    monkeypatch.setattr(folder, "DEFAULT_DATA_DIR", tmp_path / "cache")
    caplog.set_level("INFO", logger="reslab")
    root = tmp_path / "imgs"
    write_image_folder(root)
    ds = load_dataset(f"imagefolder:{root}")
    assert ds.train_x.shape == (6, 3, 10, 12) and ds.classes == ["cat", "dog"]
    assert ds.train_y.tolist() == [0, 0, 0, 1, 1, 1]
    from PIL import Image

    assert np.array_equal(ds.train_x[4].numpy().transpose(1, 2, 0), np.asarray(Image.open(root / "train/dog/1.png")))
    assert "decoding" in caplog.text
    (cache,) = [p for p in (tmp_path / "cache" / "imagefolder-cache").iterdir() if p.name != ".reslab"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache", "imgs"]  # nothing beside the user's folder
    caplog.clear()
    again = load_dataset(f"imagefolder:{root}")
    assert "decoding" not in caplog.text  # served from the cache
    assert torch.equal(again.train_x, ds.train_x)
    cache.write_bytes(b"garbage")  # a damaged cache is rebuilt, not trusted
    assert torch.equal(load_dataset(f"imagefolder:{root}").train_x, ds.train_x)
    # A cache that an older reslab left beside the folder is still read, and never written.
    old = tmp_path / ".imgs.reslab-cache.npz"
    cache.rename(old)
    caplog.clear()
    assert torch.equal(load_dataset(f"imagefolder:{root}").train_x, ds.train_x)
    assert "decoding" not in caplog.text and not cache.exists()


def test_image_folder_errors(tmp_path):
    root = tmp_path / "imgs"
    write_image_folder(root)
    for f in (root / "test" / "dog").iterdir():
        f.unlink()
    with pytest.raises(UserError, match="test/dog holds no images"):
        load_dataset(f"imagefolder:{root}")
    (root / "test" / "dog" / "0.png").write_bytes(b"not an image")
    with pytest.raises(UserError, match="0.png is not a readable image"):
        load_dataset(f"imagefolder:{root}")


def test_digits_is_embedded_and_split():
    ds = load_dataset("digits")
    assert ds.train_x.shape[1:] == (1, 8, 8)
    assert len(ds.train_y) + len(ds.test_y) == 1797
    assert ds.train_x.max() == 255


def test_the_shipped_digits_are_the_uci_digits_and_need_no_scikit_learn():
    import hashlib
    import subprocess
    import sys

    # The file scikit-learn distributes, byte for byte (see src/reslab/datasets/README.md).
    assert hashlib.md5(data.DIGITS_FILE.read_bytes()).hexdigest() == "9b335364a7bfd63947c7480a5bd51f2d"
    images, labels = data.digits_arrays()
    assert images.shape == (1797, 8, 8) and images.min() == 0 and images.max() == 16
    assert np.bincount(labels).tolist() == [178, 182, 177, 183, 181, 182, 181, 179, 174, 180]
    assert not images.flags.writeable  # shared by every load in a process: nobody may change it
    no_sklearn = "import sys; sys.modules['sklearn'] = None"  # importing it fails
    script = f"{no_sklearn}; from reslab import data; print(len(data.load_digits().train_y))"
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.stdout.strip() == "1438", done.stderr


def test_normalisation_uses_training_split():
    ds = data.make_synthetic(200, 50, (3, 8, 8))
    mean, std = ds.normalization()
    x = ds.train_x.double() / 255
    assert np.allclose(mean, x.mean(dim=(0, 2, 3)).tolist())
    assert np.allclose(std, x.std(dim=(0, 2, 3)).tolist())


def test_val_split_and_balanced_subset():
    ds = prepare(data.make_synthetic(1000, 50, (3, 8, 8)), subset=200, val_split=100, seed=0)
    assert len(ds.val_y) == 100 and len(ds.train_y) == 200
    assert torch.bincount(ds.val_y).tolist() == [10] * 10
    assert torch.bincount(ds.train_y).tolist() == [20] * 10
    with pytest.raises(UserError, match="--subset"):
        prepare(data.make_synthetic(100, 10, (3, 8, 8)), subset=500)


def test_unknown_dataset():
    with pytest.raises(UserError, match="unknown dataset 'imagenet'"):
        load_dataset("imagenet")


def test_download_checks_md5_and_leaves_nothing_on_mismatch(tmp_path):
    src = tmp_path / "file.bin"
    src.write_bytes(b"hello")
    dest = tmp_path / "out" / "file.bin"
    with pytest.raises(UserError, match="damaged"):
        data.download(src.as_uri(), dest, "0" * 32)
    assert not dest.exists() and list(dest.parent.iterdir()) == []
    data.download(src.as_uri(), dest, data.md5_of(src))
    assert dest.read_bytes() == b"hello"


def test_download_failure_says_where_to_put_the_file(tmp_path):
    with pytest.raises(UserError, match="put it at"):
        data.download((tmp_path / "missing").as_uri(), tmp_path / "x.tar.gz", "0" * 32)


@pytest.mark.parametrize("python_has_filter", [True, False], ids=["data-filter", "older-python"])
def test_a_downloaded_cifar_archive_is_unpacked_safely(tmp_path, monkeypatch, python_has_filter):
    """The download path end to end on an archive the test makes: a good one unpacks and loads,
    one with a link or a path outside the folder is refused, with or without tarfile's filter."""
    import io
    import tarfile

    if not python_has_filter:
        monkeypatch.delattr(tarfile, "data_filter", raising=False)
    folder, _ = write_cifar10(tmp_path / "src")

    def archive(path, evil=None):
        with tarfile.open(path, "w:gz") as tar:
            tar.add(folder, arcname="cifar-10-batches-py")
            if evil:
                tar.addfile(evil, io.BytesIO(b"x") if evil.isreg() else None)

    good = tmp_path / "good.tar.gz"
    archive(good)
    spec = {**data.CIFAR["cifar10"], "url": good.as_uri(), "md5": data.md5_of(good)}
    monkeypatch.setitem(data.CIFAR, "cifar10", spec)
    ds = load_dataset("cifar10", tmp_path / "data")
    assert ds.train_x.shape == (100, 3, 32, 32)
    for evil in (tarfile.TarInfo("../outside.txt"), tarfile.TarInfo("cifar-10-batches-py/link")):
        if evil.name.endswith("link"):
            evil.type, evil.linkname = tarfile.SYMTYPE, "/etc/passwd"
        else:
            evil.size = 1
        bad = tmp_path / "bad.tar.gz"
        archive(bad, evil)
        monkeypatch.setitem(data.CIFAR, "cifar10", {**spec, "url": bad.as_uri(), "md5": data.md5_of(bad)})
        with pytest.raises(UserError, match="not unpacked"):
            load_dataset("cifar10", tmp_path / f"data-{evil.name[-4:]}")
        assert not (tmp_path / "outside.txt").exists()


# ---------------------------------------------------------------------------------------------
# 5. image folders: 16-bit images and edited files


def image_folder(root, make):
    for split in ("train", "test"):
        for c in ("a", "b"):
            (root / split / c).mkdir(parents=True)
            for i in range(2):
                make(root / split / c / f"{i}.png", i)


def test_sixteen_bit_images_are_scaled_not_clipped(tmp_path):
    from PIL import Image

    from reslab.data import load_image_folder

    ramp = np.linspace(0, 65535, 64 * 64).reshape(64, 64).astype(np.uint16)
    image_folder(tmp_path / "f", lambda p, i: Image.fromarray(ramp).save(p))
    x = load_image_folder(tmp_path / "f").train_x
    assert x.shape[1:] == (1, 64, 64)
    assert float((x == 255).float().mean()) < 0.01  # was 99.9% before: clipped at 255
    assert abs(float(x.float().mean()) - 127.5) < 1


def test_an_edited_image_of_the_same_size_is_decoded_again(tmp_path):
    from PIL import Image

    from reslab.data import load_image_folder

    image_folder(tmp_path / "f", lambda p, i: Image.new("L", (8, 8), 10).save(p))
    assert int(load_image_folder(tmp_path / "f").train_x.max()) == 10
    target = tmp_path / "f" / "train" / "a" / "0.png"
    size = target.stat().st_size
    Image.new("L", (8, 8), 200).save(target)
    assert target.stat().st_size == size  # same name, same size: only the content changed
    assert int(load_image_folder(tmp_path / "f").train_x.max()) == 200


def test_image_folder_links_and_bombs_get_a_sentence(tmp_path):
    from PIL import Image

    from reslab.data import load_image_folder

    image_folder(tmp_path / "f", lambda p, i: Image.new("L", (8, 8), 10).save(p))
    os.symlink(tmp_path / "nowhere.png", tmp_path / "f" / "train" / "a" / "dangling.png")
    with pytest.raises(UserError, match="broken or looping link"):
        load_image_folder(tmp_path / "f")
    (tmp_path / "f" / "train" / "a" / "dangling.png").unlink()
    os.symlink("loop.png", tmp_path / "f" / "train" / "a" / "loop.png")
    with pytest.raises(UserError, match="broken or looping link"):
        load_image_folder(tmp_path / "f")
    (tmp_path / "f" / "train" / "a" / "loop.png").unlink()
    Image.new("1", (20000, 20000)).save(tmp_path / "f" / "train" / "a" / "0.png")  # 400 Mpixel, a few KB
    with pytest.raises(UserError, match="decompression bomb"):
        load_image_folder(tmp_path / "f")


# ---------------------------------------------------------------------------------------------
# a training subset is scored on a test subset in proportion


def test_a_training_subset_is_scored_on_a_test_subset_in_proportion(tmp_path):
    from reslab.train import setup

    part, config = setup(TrainConfig(dataset="digits", device="cpu", subset=719), tmp_path / "a")
    assert len(part.data.test_y) == round(359 * 719 / 1438) == config.data.test_size
    assert sorted(torch.bincount(part.data.test_y).tolist())[0] >= 17  # class-balanced: 18 per class
    whole, _ = setup(TrainConfig(dataset="digits", device="cpu", subset=719, test_subset=0), tmp_path / "b")
    assert len(whole.data.test_y) == 359
    assert torch.equal(part.data.train_x, whole.data.train_x)  # the training images do not depend on it
    full, _ = setup(TrainConfig(dataset="digits", device="cpu"), tmp_path / "c")
    assert len(full.data.test_y) == 359
