"""Make values safe for shell lines.

Every value that reaches a generated script passes through `quote`; every environment variable
name passes `check_env_name`. Nothing a user writes in YAML can then run as a command.
"""

from __future__ import annotations

import re
import shlex

from hpcrepro.errors import UserError

_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def quote(value: object) -> str:
    """Quote one value as a single shell word (booleans as 1/0, as NVIDIA's configs write them)."""
    if isinstance(value, bool):
        value = int(value)
    return shlex.quote(str(value))


def is_env_name(name: str) -> bool:
    return bool(_ENV_NAME.fullmatch(name))


def check_env_name(name: str, where: str | None = None) -> str:
    """Return `name` if it is a valid environment variable name, else raise a UserError."""
    if not is_env_name(name):
        raise UserError(
            f"'{name}' is not a valid environment variable name",
            where=where,
            hint="use letters, digits and underscores, not starting with a digit",
        )
    return name
