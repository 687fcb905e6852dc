"""Hostile and careless environments, by class: a file reslab did not write is never replaced, no
read can hang or exhaust memory. Each class has a test that walks its mechanism (every writer,
every reader) beside the cases a user met."""

import ast
import os
import shutil
from pathlib import Path

import pytest
from conftest import copy_run, refused
from test_permissions import shared_dir  # noqa: F401  (a folder an unprivileged user reaches)

from reslab import files, runs
from reslab.cli import main

SRC = Path(__file__).resolve().parents[1] / "src" / "reslab"
USER = b"the user's own file, not reslab's\n"

pytestmark = pytest.mark.timeout(300)  # a read that blocks fails its test instead of hanging the suite


def ok(capsys, argv):
    code = main([str(a) for a in argv])
    out = capsys.readouterr()
    assert code == 0, out.err
    return out.out


def project(trained, tmp_path) -> Path:
    """proj/ with one run, proj/r1, as `reslab train --out proj/r1` leaves it."""
    proj = tmp_path / "proj"
    proj.mkdir()
    shutil.copytree(trained, proj / "r1")
    return proj


# 1. A file reslab did not write is never replaced.


def test_report_keeps_the_users_report_and_figures(capsys, trained, tmp_path):
    proj = project(trained, tmp_path)
    (proj / "figures").mkdir()
    (proj / "report.html").write_bytes(USER)
    (proj / "figures" / "error_curves.png").write_bytes(USER)
    refused(capsys, ["report", proj], "report.html", "did not write", "--overwrite")
    assert (proj / "report.html").read_bytes() == USER
    assert (proj / "figures" / "error_curves.png").read_bytes() == USER  # nothing written before the refusal
    ok(capsys, ["report", proj, "--overwrite"])
    assert (proj / "report.html").read_bytes() != USER
    ok(capsys, ["report", proj])  # now reslab's own: replaced without a word


def test_an_analysis_keeps_the_users_files_in_its_out(capsys, trained, tmp_path):
    mine = tmp_path / "mine"
    for name in ("figures/responses.png", "analyses/responses.json"):
        (mine / name).parent.mkdir(parents=True, exist_ok=True)
        (mine / name).write_bytes(USER)
    refused(capsys, ["analyze", "responses", trained, "--out", mine], "did not write")
    assert all((mine / n).read_bytes() == USER for n in ("figures/responses.png", "analyses/responses.json"))
    assert not (mine / "figures" / "responses.svg").exists()  # refused before any work


def test_an_experiment_is_refused_before_it_trains(capsys, tmp_path):
    out = tmp_path / "exp"
    grid = ["experiment", "--archs", "resnet", "--depths", "8", "--dataset", "digits", "--iterations", "4"]
    ok(capsys, [*grid, "--out", out])
    (out / "report.html").write_bytes(USER)
    before = sorted(p.name for p in out.iterdir())
    refused(capsys, [*grid, "--seeds", "2", "--out", out], "report.html", "did not write")
    assert sorted(p.name for p in out.iterdir()) == before  # the second seed was not started
    assert (out / "report.html").read_bytes() == USER


@pytest.mark.parametrize("command", ["report", "responses"])
def test_every_file_a_command_wrote_is_refused_once_the_user_changed_it(capsys, trained, tmp_path, command):
    """The walk: run the command, then make each file it wrote the user's in turn; each is refused
    by name and left as the user made it."""
    proj = project(trained, tmp_path)
    argv = ["report", proj] if command == "report" else ["analyze", "responses", proj / "r1", "--out", proj]
    ok(capsys, argv)
    written = [p for p in proj.rglob("*") if p.is_file() and ".reslab" not in p.parts and "r1" not in p.parts]
    assert len(written) >= 3, written
    if command == "responses":  # what it declares it writes is what it wrote, so it is all checked first
        from reslab.analysis.common import outputs

        assert set(outputs("responses")) == {str(p.relative_to(proj)) for p in written}
    for path in written:
        original = path.read_bytes()
        path.write_bytes(USER)
        refused(capsys, argv, path.name)
        assert path.read_bytes() == USER
        path.write_bytes(original)  # reslab's again, byte for byte
    ok(capsys, argv)


def test_a_kill_between_record_and_replace_leaves_a_file_reslab_still_owns(tmp_path, monkeypatch):
    path = tmp_path / "a.json"
    files.atomic_write_bytes(path, b"old")

    def killed(*_args, **_kw):
        raise KeyboardInterrupt  # as a kill after the record named both contents, before the rename

    monkeypatch.setattr(files, "replace_bytes", killed)
    with pytest.raises(KeyboardInterrupt):
        files.atomic_write_bytes(path, b"new")
    monkeypatch.undo()
    assert path.read_bytes() == b"old" and files.is_ours(path)
    files.atomic_write_bytes(path, b"new")
    assert files.is_ours(path) and files.recorded(path) == {f"{files.hashlib.sha256(b'new').hexdigest()} 3"}


def test_a_file_of_the_same_size_but_other_bytes_is_not_reslabs(tmp_path):
    path = tmp_path / "a.csv"
    files.atomic_write_bytes(path, b"1,2")
    path.write_bytes(b"3,4")
    with pytest.raises(files.NotOurs, match="did not write"):
        files.atomic_write_bytes(path, b"5,6")
    assert path.read_bytes() == b"3,4"
    with files.overwriting():
        files.atomic_write_bytes(path, b"5,6")
    assert path.read_bytes() == b"5,6"


def calls(tree):
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            f = node.func
            name = f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) else ""
            owner = f.value.id if isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name) else ""
            yield node, owner, name


def modules():
    for path in sorted(SRC.rglob("*.py")):
        if path.name != "files.py":  # the one reader and writer
            yield path, ast.parse(path.read_text())


# Writes outside the file layer, each with its reason: a download (kept only when its hash
# matches) and its unpacked folder go into the data directory, never over a file of the user's.
WRITES_ALLOWED = {("download.py", "replace"), ("cifar.py", "replace")}


def test_every_file_reslab_writes_goes_through_the_file_layer():
    found = []
    for path, tree in modules():
        for node, owner, name in calls(tree):
            writes = (
                name in ("write_bytes", "write_text")
                and owner not in ("files",)
                or owner == "shutil"
                and name in ("copy", "copyfile", "copy2", "move", "copytree")
                or name == "replace"
                and owner == "os"
                or name == "open"
                and owner in ("", "Path")
                and any(
                    isinstance(a, ast.Constant) and isinstance(a.value, str) and set(a.value) & set("wax+")
                    for a in node.args[1:2]
                )
                or name in ("savefig", "save", "savez")
                and owner in ("np", "torch", "fig")  # into a buffer only
                and not any(isinstance(a, ast.Name) and a.id == "buf" for a in node.args[:2])
            )
            if writes and (path.name, name) not in WRITES_ALLOWED:
                found.append(f"{path.relative_to(SRC)}:{node.lineno} {owner}.{name}")
    assert not found, "writes that bypass files.atomic_write_bytes: " + ", ".join(found)


# 2. No read can hang or exhaust memory.

# Every way to read a file by its path: (module or object, function); "" is a bare name.
READERS = {
    ("", "open"),
    ("io", "open"),
    ("gzip", "open"),
    ("tarfile", "open"),
    ("Image", "open"),
    ("zipfile", "ZipFile"),
    ("torch", "load"),
    ("np", "load"),
    ("np", "loadtxt"),
    ("np", "genfromtxt"),
    ("np", "fromfile"),
    ("np", "memmap"),
    ("pickle", "load"),
    ("", "load_file"),
    ("", "safe_open"),
    ("csv", "reader"),
}
# Reads outside the file layer, each with its reason.
READS_ALLOWED = {"accel.py"}  # /proc/cpuinfo: the kernel's, never a FIFO or a user's file


def guarded_names(tree) -> set[str]:
    """Names bound by `with open_regular(...) as f` (or files.open_regular)."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.With):
            for item in node.items:
                c = item.context_expr
                f = c.func if isinstance(c, ast.Call) else None
                called = f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) else ""
                if called == "open_regular" and isinstance(item.optional_vars, ast.Name):
                    names.add(item.optional_vars.id)
    return names


def test_every_file_reslab_reads_goes_through_the_guarded_reader():
    found = []
    for path, tree in modules():
        safe = guarded_names(tree)
        for node, owner, name in calls(tree):
            by_path = (owner, name) in READERS or name in ("read_bytes", "read_text")
            if not by_path or path.name in READS_ALLOWED:
                continue
            source = node.args[0] if node.args else next((k.value for k in node.keywords if k.arg == "fileobj"), None)
            fine = (
                isinstance(source, ast.Name)
                and source.id in safe  # a file object of open_regular's
                or isinstance(source, ast.Call)
                and getattr(source.func, "attr", getattr(source.func, "id", "")) == "BytesIO"  # bytes it read
            )
            if not fine:
                found.append(f"{path.relative_to(SRC)}:{node.lineno} {owner}.{name}")
    assert not found, "reads that bypass files.open_regular: " + ", ".join(found)


def test_the_read_walk_finds_a_bare_read():
    tree = ast.parse("import torch\nwith open('x') as f:\n    torch.load('y')\nPath('z').read_text()\n")
    assert {(o, n) for _, o, n in calls(tree)} >= {("", "open"), ("torch", "load")}
    assert len([1 for _, o, n in calls(tree) if (o, n) in READERS or n == "read_text"]) == 3


@pytest.fixture
def fifo(tmp_path):
    path = tmp_path / "pipe.th"
    os.mkfifo(path)
    return path


def test_a_fifo_to_import_is_refused_not_waited_on(capsys, fifo, tmp_path):
    refused(capsys, ["import", fifo, "--out", tmp_path / "r"], "FIFO")
    (tmp_path / "link.th").symlink_to(fifo)
    refused(capsys, ["import", tmp_path / "link.th", "--out", tmp_path / "r"], "FIFO")
    assert not (tmp_path / "r").exists()


def test_a_fifo_as_init_from_is_refused(capsys, fifo, tmp_path):
    argv = ["train", "--dataset", "digits", "--iterations", "4", "--init-from", fifo, "--out", tmp_path / "r"]
    refused(capsys, argv, "FIFO")


@pytest.mark.parametrize("name", ["model.safetensors", "metrics.csv", "checkpoint.pt"])
@pytest.mark.parametrize("make", ["fifo", "zero"])
def test_a_run_file_that_is_a_fifo_or_dev_zero_is_refused(capsys, trained, tmp_path, name, make):
    run = copy_run(trained, tmp_path)
    runs.write_status(run, "interrupted")  # so that --resume reads its checkpoint and metrics
    (run / name).unlink()
    os.mkfifo(run / name) if make == "fifo" else (run / name).symlink_to("/dev/zero")
    command = ["eval", run] if name == "model.safetensors" else ["train", "--resume", run]
    refused(capsys, command, name, "FIFO" if make == "fifo" else "symbolic link")
    if name == "metrics.csv":
        code = main(["report", str(run)])  # the run is left out with its reason, or refused: never a hang
        assert code in (0, 2)
        assert "FIFO" in capsys.readouterr().err or make == "zero"


def test_a_cifar_batch_that_is_a_fifo_is_refused(capsys, tmp_path):
    folder = tmp_path / "data" / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    for name in ["data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5", "test_batch"]:
        os.mkfifo(folder / name)
    argv = ["train", "--dataset", "cifar10", "--data-dir", tmp_path / "data", "--no-download", "--out", tmp_path / "r"]
    refused(capsys, argv, "data_batch_1", "FIFO")


def test_an_image_that_is_a_fifo_is_refused(capsys, tmp_path):
    for split in ("train", "test"):
        (tmp_path / "imgs" / split / "cat").mkdir(parents=True)
        os.mkfifo(tmp_path / "imgs" / split / "cat" / "a.png")
    argv = ["train", "--dataset", f"imagefolder:{tmp_path / 'imgs'}", "--iterations", "2", "--out", tmp_path / "r"]
    code = main([str(a) for a in argv])
    assert code == 2 and "a.png" in capsys.readouterr().err


# 3. The machine's limits are sentences, never tracebacks.


def reslab_env(*args, env=None, limit_kb=None, timeout=600):
    """`python -m reslab ARGS` in a subprocess with extra environment variables (and a memory limit)."""
    import resource
    import subprocess
    import sys

    def limited():
        if limit_kb:
            resource.setrlimit(resource.RLIMIT_AS, (limit_kb * 1024, limit_kb * 1024))

    return subprocess.run(
        [sys.executable, "-m", "reslab", *map(str, args)],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        preexec_fn=limited,
        timeout=timeout,
    )


def one_sentence(done, *phrases):
    assert done.returncode == 2, done.stderr[-2000:]
    assert "Traceback" not in done.stderr, done.stderr[-2000:]
    for p in phrases:
        assert p in done.stderr, done.stderr


def checkpoint_file(tmp_path) -> Path:
    """A ResNet-20 state dict in the common CIFAR layout, as `reslab import` reads it."""
    import torch

    from reslab.models import ModelConfig, build_model

    path = tmp_path / "resnet20.th"
    model = build_model(ModelConfig(arch="resnet", depth=20, shortcut="A"))
    torch.save({"state_dict": {f"module.{k}": v for k, v in model.state_dict().items()}}, path)
    return path


LONG = "x" * 300  # longer than a file name may be on Linux (255 bytes)


@pytest.mark.parametrize(
    "command",
    [
        ["train", "--dataset", "digits", "--iterations", "2", "--out", "{long}/r"],
        ["demo", "--dataset", "digits", "--epochs", "0.1", "--out", "{long}"],
        ["experiment", "--dataset", "digits", "--iterations", "2", "--depths", "8", "--out", "{long}"],
        ["experiment", "init", "--dataset", "digits", "--iterations", "2", "--depths", "8,14", "--out", "{long}"],
        ["import", "{checkpoint}", "--out", "{long}/r"],
        ["report", "{long}"],
        ["eval", "{long}/r"],
        ["analyze", "responses", "{run}", "--out", "{long}"],
        ["analyze", "identity", "--max-layers", "1", "--steps", "1", "--out", "{long}"],
    ],
    ids=lambda c: " ".join(c[:2]),
)
def test_an_out_too_long_for_the_file_system_is_one_sentence(capsys, trained, tmp_path, command):
    names = {"long": tmp_path / LONG, "run": trained}
    if "{checkpoint}" in command:
        names["checkpoint"] = checkpoint_file(tmp_path)
    argv = [a.format(**names) for a in command]
    err = refused(capsys, argv, "too long")
    assert "Traceback" not in err and LONG[:50] in err


def test_memory_run_out_is_one_sentence_and_verbose_shows_the_cause(tmp_path):
    argv = ["train", "--dataset", "digits", "--image-size", "1024", "--batch-size", "64", "--iterations", "2"]
    done = reslab_env(*argv, "--out", tmp_path / "r", limit_kb=3_000_000)
    one_sentence(done, "ran out of memory", "--batch-size")
    verbose = reslab_env(*argv, "--out", tmp_path / "r2", "--verbose", limit_kb=3_000_000)
    assert verbose.returncode == 2 and "the cause:" in verbose.stdout + verbose.stderr
    assert "can't allocate memory" in verbose.stdout + verbose.stderr or "MemoryError" in verbose.stdout


def test_os_and_memory_errors_at_the_edge_are_sentences(capsys, monkeypatch, tmp_path):
    import errno

    from reslab import commands

    cases = {
        OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "f")): "no space left",
        OSError(errno.EROFS, "Read-only file system", str(tmp_path / "f")): "Make",
        MemoryError(): "ran out of memory",
        RuntimeError("[enforce fail] DefaultCPUAllocator: can't allocate memory: you tried"): "ran out of memory",
    }
    for error, phrase in cases.items():

        def fail(args, error=error):
            raise error

        monkeypatch.setitem(commands.COMMANDS, "report", fail)
        refused(capsys, ["report", tmp_path], phrase)
    monkeypatch.setitem(commands.COMMANDS, "report", lambda args: (_ for _ in ()).throw(RuntimeError("a bug")))
    with pytest.raises(RuntimeError, match="a bug"):  # a bug stays a traceback: it is not the machine's limit
        main(["report", str(tmp_path)])


def test_a_broken_matplotlib_setting_does_not_stop_the_report(trained, tmp_path):
    proj = project(trained, tmp_path)
    rc = tmp_path / "rc"
    rc.mkdir()
    (rc / "matplotlibrc").write_text("text.usetex: True\nfont.family: serif\n")
    for env in ({"MPLBACKEND": "nosuchbackend"}, {"MATPLOTLIBRC": str(rc)}):
        done = reslab_env("report", proj, env=env)
        assert done.returncode == 0, done.stderr[-2000:]
        assert (proj / "figures" / "error_curves.png").stat().st_size > 10_000


def test_a_figure_that_cannot_be_drawn_costs_only_its_section(capsys, monkeypatch, trained, tmp_path):
    from reslab import plots

    proj = project(trained, tmp_path)
    monkeypatch.setattr(plots, "error_curves", lambda *a, **k: 1 / 0)
    ok(capsys, ["report", proj])
    html = (proj / "report.html").read_text()
    assert "The figure error_curves could not be drawn here (ZeroDivisionError" in html
    assert "Summary (paper, Table 6)" in html  # the rest of the report stands


def test_a_read_only_data_folder_is_one_sentence(shared_dir, monkeypatch):  # noqa: F811
    from test_permissions import reslab_as_user

    ro = shared_dir / "ro"
    ro.mkdir()
    os.chmod(ro, 0o555)
    home = shared_dir / "home"
    monkeypatch.setenv("RESLAB_DATA", str(ro))
    done = reslab_as_user("import", "resnet20", "--out", shared_dir / "r1", home=home)
    one_sentence(done, str(ro), "--data-dir (or RESLAB_DATA)")
    done = reslab_as_user("train", "--dataset", "cifar10", "--data-dir", ro, "--out", shared_dir / "r2", home=home)
    one_sentence(done, str(ro), "writable")
    assert not (shared_dir / "r1").exists() and not (shared_dir / "r2").exists()


def test_without_dev_shm_an_experiment_trains_in_one_process(tmp_path):
    import shutil as sh
    import subprocess
    import sys

    if os.geteuid() != 0 or sh.which("unshare") is None:
        pytest.skip("needs root and unshare to mount a read-only /dev/shm in a private namespace")
    grid = "--archs resnet --depths 8 --seeds 2 --dataset digits --iterations 4 --jobs 2"
    script = (
        f"mount -t tmpfs -o ro tmpfs /dev/shm && {sys.executable} -m reslab experiment {grid} --out {tmp_path / 'e'}"
    )
    done = subprocess.run(["unshare", "-m", "sh", "-c", script], capture_output=True, text=True, timeout=600)
    if "mount:" in done.stderr or "unshare:" in done.stderr:
        pytest.skip(f"no private mount namespace here: {done.stderr.strip()[:120]}")
    assert done.returncode == 0, done.stderr[-2000:]
    assert "worker processes cannot start here" in done.stderr
    assert (tmp_path / "e" / "report.html").exists()


# 6. No half-made run: every check that can refuse comes before the output is claimed.

LATE_FAILURES = {
    "a dataset that does not exist": ["--dataset", "imagefolder:{tmp}/none"],
    "an --init-from that is not weights": ["--init-from", "{tmp}/notes.txt"],
    "a network too big to build": ["--depth", "200000", "--arch", "resnet"],
}


@pytest.mark.parametrize("command", ["train", "demo", "experiment", "experiment init"])
@pytest.mark.parametrize("failure", list(LATE_FAILURES))
def test_a_refused_command_leaves_no_output_behind(capsys, tmp_path, command, failure):
    (tmp_path / "notes.txt").write_text("not weights")
    extra = [a.format(tmp=tmp_path) for a in LATE_FAILURES[failure]]
    if command != "train" and ("--init-from" in extra or "--depth" in extra):
        if "--init-from" in extra and command == "demo":
            pytest.skip("the demo takes no --init-from")
        extra = ["--depths", "200000"] if "--depth" in extra else extra
    if command == "demo" and "--depths" in extra:
        pytest.skip("the demo's depths are fixed")
    argv = [*command.split(), "--dataset", "digits", "--iterations", "2", *extra, "--out", tmp_path / "out"]
    if command == "demo":
        argv = [a for a in argv if a not in ("--iterations", "2")]
    code = main([str(a) for a in argv])
    err = capsys.readouterr().err
    assert code == 2, err
    assert not (tmp_path / "out").exists(), f"{command} left {sorted(os.listdir(tmp_path / 'out'))} after: {err}"


def test_a_read_only_home_costs_only_the_cache(shared_dir, monkeypatch):  # noqa: F811
    """Clusters often mount HOME read-only: the decoded-image cache there is skipped with a note."""
    from PIL import Image
    from test_data import image_folder
    from test_permissions import reslab_as_user

    image_folder(shared_dir / "imgs", lambda p, i: Image.new("RGB", (8, 8), (40 * i, 0, 0)).save(p))
    home = shared_dir / "ro-home"
    home.mkdir()
    os.chmod(home, 0o555)
    monkeypatch.delenv("RESLAB_DATA", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    argv = ["train", "--dataset", f"imagefolder:{shared_dir / 'imgs'}", "--depth", "8", "--iterations", "2"]
    done = reslab_as_user(*argv, "--out", shared_dir / "r", home=home)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "could not write the cache" in done.stderr and "Traceback" not in done.stderr


def test_a_tensorboard_that_breaks_on_import_is_one_sentence(capsys, monkeypatch, tmp_path):
    import importlib.abc
    import sys

    class Broken(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name == "torch.utils.tensorboard":
                raise AttributeError("module 'numpy' has no attribute 'bool8'")  # a version mismatch, as met
            return None

    monkeypatch.delitem(sys.modules, "torch.utils.tensorboard", raising=False)
    monkeypatch.setattr(sys, "meta_path", [Broken(), *sys.meta_path])
    refused(capsys, ["train", "--dataset", "digits", "--tensorboard", "--out", tmp_path / "r"], "fails to import")
    assert not (tmp_path / "r").exists()


def test_a_user_with_no_home_can_still_train(shared_dir):  # noqa: F811
    """A container's arbitrary user: no HOME and no entry in the password database."""
    import shutil as sh
    import subprocess
    import sys

    if os.geteuid() != 0 or sh.which("setpriv") is None:
        pytest.skip("needs root and setpriv to run as a user the password database does not know")
    env = {k: v for k, v in os.environ.items() if k not in ("HOME", "RESLAB_DATA")}
    argv = ["train", "--dataset", "digits", "--depth", "8", "--iterations", "2", "--out", shared_dir / "r"]
    cmd = ["setpriv", "--reuid=54321", "--regid=54321", "--clear-groups", sys.executable, "-m", "reslab", *argv]
    done = subprocess.run(list(map(str, cmd)), capture_output=True, text=True, env=env, cwd=shared_dir, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert (shared_dir / "r" / "model.safetensors").exists()
