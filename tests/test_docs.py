"""The README and docs/ stay true to the tree: every relative link leads to a file, the README
stays a first screen a newcomer reads in minutes, and its two set-up commands come first."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_relative_link_leads_to_a_file(page):
    links = re.findall(r"\]\(([^)\s]+)\)", page.read_text())
    broken = [
        link
        for link in links
        if not link.startswith(("http://", "https://", "#", "mailto:"))
        and not (page.parent / link.split("#")[0]).exists()
    ]
    assert not broken, f"{page.name}: {broken}"


def test_the_readme_is_a_first_screen_that_opens_with_the_two_set_up_commands():
    text = (ROOT / "README.md").read_text()
    assert len(text) <= 15_000
    commands = re.findall(r"(?m)^    (python3 -m venv .*)$", text)
    assert commands[0].endswith("reslab demo") and commands[1].endswith("pytest")
    assert text.index(commands[1]) < text.index("## ")  # before any section
    ci = (ROOT / ".ci" / "run").read_text()
    assert commands[1] in ci.replace("pip install -q", "pip install")  # CI runs the README's test command


def test_mkdocs_lists_every_page():
    nav = (ROOT / "mkdocs.yml").read_text()
    assert sorted(re.findall(r": (\S+\.md)$", nav, re.M)) == sorted(p.name for p in PAGES[1:])


def test_the_library_page_runs_as_written(tmp_path):
    """docs/library.md, its python blocks run in order in one fresh interpreter, as a notebook would."""
    import subprocess
    import sys

    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "docs" / "library.md").read_text(), re.S)
    assert len(blocks) >= 4
    done = subprocess.run(
        [sys.executable, "-c", "\n".join(blocks)], cwd=tmp_path, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "resnet-20: training error" in done.stdout and "mean response std" in done.stdout
    assert (tmp_path / "runs" / "library" / "curves.png").read_bytes().startswith(b"\x89PNG")
