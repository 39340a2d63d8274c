"""The one exception type for user-facing errors.

Anything a user can cause (bad flag values, missing data files, a diverging run) raises
``LinsslError`` with a one-line message; the CLI prints it and exits with code 2.
"""


class LinsslError(Exception):
    """A user-facing error: the message is one line and says what to change."""


class DivergenceError(LinsslError):
    """A run produced non-finite or exploding values (usually: learning rate too large)."""
