"""reslab's one output channel. Library modules log through logging.getLogger(__name__), all
under the "reslab" logger; the command line sets the format and the level (--quiet, --verbose).
From Python nothing is shown until logging is configured: logging.basicConfig(level="INFO")
shows what the command line prints, and a handler on "reslab" redirects it."""

from __future__ import annotations

import contextlib
import logging
import sys
import threading
from collections.abc import Iterator

ROOT = logging.getLogger("reslab")
ROOT.addHandler(logging.NullHandler())


class _Console(logging.StreamHandler):
    """Writes to sys.stdout or sys.stderr as they are when a line is written (a notebook or a
    test may have replaced them since)."""

    def __init__(self, name: str):
        self._which = name
        super().__init__()

    @property  # type: ignore[override]
    def stream(self):
        return getattr(sys, self._which)

    @stream.setter
    def stream(self, value) -> None:
        pass


class _Below(logging.Filter):
    """Passes the records under a level: information to stdout, notes and warnings to stderr."""

    def __init__(self, level: int):
        super().__init__()
        self.level = level

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno < self.level


def configure(quiet: bool = False, verbose: bool = False) -> None:
    """The command line's output: information on stdout as plain lines, notes and warnings on
    stderr after 'reslab: '. quiet: notes and warnings only; verbose: debugging lines too."""
    for h in list(ROOT.handlers):
        if not isinstance(h, logging.NullHandler):
            ROOT.removeHandler(h)
    out = _Console("stdout")
    out.addFilter(_Below(logging.WARNING))
    out.setFormatter(logging.Formatter("%(message)s"))
    err = _Console("stderr")
    err.setLevel(logging.WARNING)
    err.setFormatter(logging.Formatter("reslab: %(message)s"))
    ROOT.addHandler(out)
    ROOT.addHandler(err)
    ROOT.setLevel(logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO)


_HELD: dict[str, tuple[int, int]] = {}  # logger name -> (times held now, its level before)
_LOCK = threading.Lock()


@contextlib.contextmanager
def silenced(*names: str) -> Iterator[None]:
    """The information of these loggers held back (a grid's cells train without a word: the
    grid speaks for them); notes and warnings still pass. Cells on threads may hold the same
    logger at once: the first to hold it lowers it, the last to let go restores it."""
    with _LOCK:
        for name in names:
            logger = logging.getLogger(name)
            count, level = _HELD.get(name, (0, logger.level))
            _HELD[name] = (count + 1, level)
            logger.setLevel(max(logger.getEffectiveLevel(), logging.WARNING))
    try:
        yield
    finally:
        with _LOCK:
            for name in names:
                count, level = _HELD.pop(name)
                if count > 1:
                    _HELD[name] = (count - 1, level)
                else:
                    logging.getLogger(name).setLevel(level)
