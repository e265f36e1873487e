"""GraphQL input errors without the input values they would echo (keys, passwords...).

graphql-core names the offending value in coercion errors ("..., found: {'ek': '0011...'}"),
which would put a mistyped key into the answer and the log. The rule and the path stay.
"""

from __future__ import annotations

import re

_CANNOT_REPRESENT = re.compile(r"(cannot represent [^:]*value): .*\Z", re.S)
_FOUND = re.compile(r", found:? .*\Z", re.S)


def without_values(message: str) -> str:
    """``message`` with the echoed input value cut off."""
    message = _CANNOT_REPRESENT.sub(r"\1 (value not shown).", message)
    if message.startswith(("Variable '$", "Expected value of type")):
        message = _FOUND.sub(" (value not shown).", message)
    return message
