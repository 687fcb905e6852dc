"""The pieces of the HTML report: tables, verdicts and figures, with every value from disk
escaped (only markup reslab writes itself, marked Html, goes into the page as it is)."""

from __future__ import annotations

import base64
import logging
import os
from html import escape
from pathlib import Path

from reslab import files
from reslab.errors import UserError, one_line


class Html(str):
    """Markup reslab wrote itself; every other string that reaches the page is escaped."""


def esc(value) -> str:
    """Any value from disk, as text safe to put into the page."""
    return escape(str(value))


def count(value) -> str:
    """A whole number with thousands separators, or the value escaped when a file holds no number."""
    return f"{value:,}" if isinstance(value, int) and not isinstance(value, bool) else esc(value)


# A figure reslab draws is a few hundred KB; a larger file is not one of them.
MAX_PNG_BYTES = 16 * 2**20
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def embed_png(path: Path, alt: str) -> str:
    """A PNG file as an <img> with a data URI: only a regular file (no link, FIFO or folder) that
    really is a PNG and of a figure's size, so nothing else on the disk can reach the page."""
    data = files.read_regular(Path(path), MAX_PNG_BYTES, "figure")
    if not data.startswith(PNG_MAGIC):
        raise UserError(f"{path} is not a PNG image; it is not shown.")
    return f'<img src="data:image/png;base64,{base64.b64encode(data).decode()}" alt="{escape(alt)}">'


def drawn(name: str, alt: str, draw, *args) -> str:
    """A figure drawn now by `draw(*args)` (which returns its saved paths), embedded; one that
    cannot be drawn costs only its own place on the page, with the reason."""
    try:
        return embed_png(draw(*args)[0], alt)
    except (files.WriteError, files.NotOurs):
        raise  # a full disk or a file of the user's in the way stops the report: nothing half-written
    except UserError as e:
        return f'<p class="note">The figure {escape(name)} is not shown: {escape(str(e))}</p>'
    except Exception as e:  # a matplotlib setting or font of this machine: the rest of the report stands
        logging.getLogger(__name__).debug("drawing %s failed", name, exc_info=True)
        return f'<p class="note">The figure {escape(name)} could not be drawn here ({escape(one_line(e))}).</p>'


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
    if not os.path.lexists(path):
        return ""
    try:
        return f'<div class="card">{embed_png(path, alt)}</div>'
    except UserError as e:
        return f'<p class="note">The figure figures/{esc(name)}.png is not shown: {esc(e)}</p>'


def finding_html(f: dict) -> str:
    """A finding an analysis wrote (claim, holds, text), shown as a verdict."""
    from reslab.verdicts import Verdict

    return verdict_html(Verdict(f["claim"], f["holds"], f["text"], f.get("testable", True)))
