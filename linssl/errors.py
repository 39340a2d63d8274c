"""The one exception type for user-facing errors.

Anything a user can cause (bad flag values, missing data files, a diverging run) raises
``LinsslError`` with a one-line message; the CLI prints it and exits with code 2.
"""

import math
import numbers


class LinsslError(Exception):
    """A user-facing error: the message is one line and says what to change."""


class DivergenceError(LinsslError):
    """A run produced non-finite or exploding values (usually: learning rate too large)."""


#: seeds must fit numpy's and torch's generators (unsigned 64 bit; torch's manual_seed takes < 2**63)
MAX_SEED = 2**63 - 1


def check_number(flag: str, value: float | None, *, low: float = 0.0, inclusive: bool = False) -> None:
    """A one-line ``LinsslError`` unless ``value`` is a finite number above ``low`` (or equal to it when
    ``inclusive``); None (a default to be filled in later) passes."""
    if value is None:
        return
    try:
        ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
    except OverflowError:  # an int beyond float range
        ok = False
    if not (ok and (value >= low if inclusive else value > low)):
        if inclusive:
            bound = f"a finite number >= {low:g}"
        else:
            bound = "a positive finite number" if low == 0 else f"a finite number > {low:g}"
        raise LinsslError(f"{flag} must be {bound}, got {value!r}")


def check_seed(flag: str, seed: int) -> None:
    """Seeds are integers in [0, 2**63 − 1]."""
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or not 0 <= seed <= MAX_SEED:
        raise LinsslError(f"{flag} must be an integer in [0, 2**63 - 1], got {seed!r}")
