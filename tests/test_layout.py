"""The package's shape: no import cycles, and every analysis a plug-in with the same parts."""

import sys
from pathlib import Path

import pytest

from reslab import analysis

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import layout  # noqa: E402


def test_no_module_imports_itself_back_through_others():
    _, found, graph = layout.measure()
    assert len(graph) > 30  # the measure saw the package
    assert found == []


@pytest.mark.parametrize("name", analysis.NAMES)
def test_every_analysis_has_the_protocols_parts(name):
    m = analysis.load(name)
    assert isinstance(m.HELP, str) and m.HELP and isinstance(m.SLOW, bool)
    for part in ("add_args", "command", "summary", "section", "analyze"):
        assert callable(getattr(m, part, None)), f"{name} has no {part}()"
    assert any(callable(v) and k.startswith("plot") for k, v in vars(m).items()), f"{name} draws no figure"


def test_no_public_name_is_shadowed_by_a_submodule():
    """Importing a submodule sets an attribute of the package: an API function of the same name
    would be replaced by the module (reslab.verdicts was, once)."""
    import importlib
    import inspect
    import pkgutil

    import reslab

    for found in pkgutil.walk_packages(reslab.__path__, "reslab."):
        if found.name != "reslab.__main__":
            importlib.import_module(found.name)
    for name in reslab.__all__:
        value = getattr(reslab, name)
        assert inspect.ismodule(value) == (name in ("analysis", "figures")), name


def test_modules_and_functions_stay_readable_in_one_sitting():
    import ast

    src = Path(__file__).resolve().parents[1] / "src" / "reslab"
    long = []
    for path in src.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno >= 60:
                long.append(f"{path.name}:{node.name} {node.end_lineno - node.lineno + 1} lines")
    assert not long, long
    lines = {name: len((src / name).read_text().splitlines()) for name in ("cli.py", "runs.py")}
    assert lines["cli.py"] < 350 and lines["runs.py"] < 450, lines
