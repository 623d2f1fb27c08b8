"""Range and choice checks for config sections, with messages that name the key.

Standard library only: `RunConfig` and `DownstreamConfig` call these from
`__post_init__`, so a bad value fails when the config is read, before any data
or model is touched. Every message reads `section.key must ...; got VALUE.`
"""

from __future__ import annotations

import codecs
import math
import numbers
from collections.abc import Collection


def whole_number(
    key: str, value: object, minimum: int | None = None, optional: bool = False, why: str = ""
) -> None:
    """Checks an integer setting (`None` allowed when `optional`)."""
    if value is None and optional:
        return
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{key} must be a whole number; got {value!r}.")
    if minimum is not None and value < minimum:
        raise ValueError(f"{key} must be >= {minimum}{why}; got {value!r}.")


def real_number(
    key: str,
    value: object,
    minimum: float | None = None,
    above: float | None = None,
    below: float | None = None,
    why: str = "",
) -> None:
    """Checks a finite float setting: `>= minimum`, `> above`, `< below`."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{key} must be a number; got {value!r}.")
    if not math.isfinite(value):
        raise ValueError(f"{key} must be a finite number; got {value!r}.")
    if minimum is not None and value < minimum:
        raise ValueError(f"{key} must be >= {minimum}{why}; got {value!r}.")
    if above is not None and value <= above:
        raise ValueError(f"{key} must be > {above}{why}; got {value!r}.")
    if below is not None and value >= below:
        raise ValueError(f"{key} must be < {below}{why}; got {value!r}.")


def whole_numbers(
    key: str, values: object, minimum: int | None = None, allow_empty: bool = True
) -> None:
    """Checks a tuple of integers, each `>= minimum`."""
    if not isinstance(values, (tuple, list)):
        raise ValueError(f"{key} must be a list of whole numbers like [256]; got {values!r}.")
    if not values and not allow_empty:
        raise ValueError(f"{key} must not be empty; got {list(values)}.")
    for value in values:
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            raise ValueError(f"{key} must hold whole numbers; got {list(values)}.")
        if minimum is not None and value < minimum:
            raise ValueError(f"{key} must hold numbers >= {minimum}; got {list(values)}.")


def choice(key: str, value: object, choices: Collection) -> None:
    """Checks that `value` is one of `choices`, suggesting the closest one."""
    if value in choices:
        return
    import difflib

    close = difflib.get_close_matches(str(value), list(choices), n=1)
    hint = f" Did you mean '{close[0]}'?" if close else ""
    raise ValueError(f"{key} must be one of {', '.join(map(repr, choices))}; got {value!r}.{hint}")


def text_encoding(key: str, value: object) -> None:
    """Checks that `value` names a text encoding Python knows."""
    if not isinstance(value, str):
        raise ValueError(f'{key} must be an encoding name like "utf-8"; got {value!r}.')
    try:
        codecs.lookup(value)
    except LookupError:
        raise ValueError(
            f'{key} must be a text encoding Python knows, such as "utf-8", "latin-1" or '
            f'"cp1252"; got {value!r}.'
        ) from None
