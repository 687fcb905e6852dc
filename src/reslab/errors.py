"""The one exception type for mistakes a user can fix (the CLI prints it and exits with 2)."""


class UserError(Exception):
    """A bad input or environment: the message says what is wrong and what to do."""
