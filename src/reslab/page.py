"""The pieces of the HTML report: tables, verdicts and figures, with every value from disk
escaped (only markup reslab writes itself, marked Html, goes into the page as it is)."""

from __future__ import annotations

import base64
from html import escape
from pathlib import Path


class Html(str):
    """Markup reslab wrote itself; every other string that reaches the page is escaped."""


def esc(value) -> str:
    """Any value from disk, as text safe to put into the page."""
    return escape(str(value))


def count(value) -> str:
    """A whole number with thousands separators, or the value escaped when a file holds no number."""
    return f"{value:,}" if isinstance(value, int) and not isinstance(value, bool) else esc(value)


def embed_png(path: Path, alt: str) -> str:
    data = base64.b64encode(Path(path).read_bytes()).decode()
    return f'<img src="data:image/png;base64,{data}" alt="{escape(alt)}">'


def table(head: list[str], rows: list[list[str]]) -> str:
    h = "".join(f"<th>{escape(c)}</th>" for c in head)
    cell = lambda c: c if isinstance(c, Html) else escape(str(c))  # noqa: E731
    body = "".join("<tr>" + "".join(f"<td>{cell(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{h}</tr></thead><tbody>{body}</tbody></table>"


def verdict_html(v) -> str:
    cls, mark = {True: ("yes", "✓"), False: ("no", "✗"), None: ("", "?")}[v.holds]
    lead = ""
    if not getattr(v, "testable", True):
        cls, mark, lead = "na", "–", "<i>Not testable at this budget.</i> "
    return (
        f'<div class="verdict {cls}"><span class="mark">{mark}</span><div><b>{escape(v.claim)}</b>'
        f"{lead}{escape(v.text)}</div></div>"
    )


def figure(exp_dir: Path, name: str, alt: str) -> str:
    """An analysis's figure from OUT/figures/NAME.png, embedded ('' when it was not drawn)."""
    path = Path(exp_dir) / "figures" / f"{name}.png"
    return f'<div class="card">{embed_png(path, alt)}</div>' if path.exists() else ""


def finding_html(f: dict) -> str:
    """A finding an analysis wrote (claim, holds, text), shown as a verdict."""
    from reslab.verdicts import Verdict

    return verdict_html(Verdict(f["claim"], f["holds"], f["text"], f.get("testable", True)))
