"""The machine's limits as one sentence each: a full or read-only disk, a path too long for the
file system, memory run out. The command line turns any OSError or MemoryError (and torch's
allocator errors) that reaches it into one of these; --verbose shows the original below it."""

from __future__ import annotations

import errno
import logging
import os
import sys
from contextlib import contextmanager

from reslab.errors import UserError

# What torch's allocators say when memory runs out (CPU, CUDA, MPS).
OUT_OF_MEMORY = ("can't allocate memory", "out of memory", "Cannot allocate memory", "MPS backend out of memory")

WHERE = "choose another --out (for a dataset or a download, set --data-dir or RESLAB_DATA to a folder you can write)"


@contextmanager
def as_sentences():
    """Within the block, the machine's limits become a UserError (one sentence, exit status 2);
    the original goes to the debug log, which --verbose shows."""
    if "matplotlib" not in sys.modules:
        # reslab draws on Figures of its own and opens no window: a backend named in MPLBACKEND is
        # not needed, and one that does not exist would stop matplotlib's import.
        os.environ.pop("MPLBACKEND", None)
    try:
        yield
    except (OSError, MemoryError, RuntimeError) as e:
        if isinstance(e, RuntimeError) and not out_of_memory(e):
            raise
        logging.getLogger("reslab").debug("the cause:", exc_info=True)
        raise UserError(sentence(e)) from None


def out_of_memory(e: BaseException) -> bool:
    return (
        isinstance(e, MemoryError)
        or isinstance(e, OSError)
        and e.errno == errno.ENOMEM
        or isinstance(e, RuntimeError)
        and any(k in str(e) for k in OUT_OF_MEMORY)
    )


def sentence(e: BaseException) -> str:
    """What went wrong and what to do, naming the path where there is one."""
    if out_of_memory(e):
        return (
            "this machine ran out of memory. Use a smaller --batch-size or --image-size, fewer --jobs, or a machine "
            "with more memory; nothing written so far is lost."
        )
    assert isinstance(e, OSError)
    path = e.filename or "a file"
    why = e.strerror or str(e)
    if e.errno == errno.ENAMETOOLONG:
        return f"{path} is too long a path for this file system ({why}); choose a shorter --out."
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        return f"no space left to write {path} ({why}); free some, then run the same command again."
    if e.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        folder = os.path.dirname(str(path)) or "."
        return f"{path} cannot be written ({why}). Make {folder} writable, or {WHERE}."
    if e.errno in (errno.EMFILE, errno.ENFILE):
        return f"too many files are open ({why}); raise the limit (ulimit -n) or use fewer --jobs."
    return f"{path}: {why}. Check that it exists and that you may use it, then run the command again."
