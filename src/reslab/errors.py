"""The one exception type for mistakes a user can fix (the CLI prints it and exits with 2), and
how any other exception is put in one line."""


class UserError(Exception):
    """A bad input or environment: the message says what is wrong and what to do."""


class ExperimentInterrupted(Exception):
    """An experiment stopped on request (Ctrl-C, SIGTERM); its running cells saved checkpoints.
    The message says how to resume; the CLI prints it and exits with 130."""


def one_line(e: BaseException, limit: int = 160) -> str:
    """An exception's type and the first line of its message, for a log line or a results file."""
    text = str(e).strip()
    return f"{type(e).__name__}: {text.splitlines()[0][:limit]}" if text else type(e).__name__


def plural(n: int, word: str) -> str:
    """'1 channel', '3 channels', '10 classes'."""
    return f"{n} {word}" if n == 1 else f"{n} {word}{'es' if word.endswith('s') else 's'}"
