"""Turn pydantic validation errors into one readable UserError.

pydantic knows the key path and the problem; the YAML loader knows the file and line. This module
joins the two and adds the fix: for an unknown key, the close matches among the valid keys.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Sequence
from typing import Any

from pydantic import BaseModel, ValidationError

from hpcrepro.errors import UserError

KeyPath = tuple[str | int, ...]


def valid_keys(model: type[BaseModel], path: Sequence[str | int]) -> list[str]:
    """The field names allowed at `path` (the parent of a rejected key) inside `model`."""
    current: Any = model
    for part in path:
        if isinstance(part, int):  # a list index: the items share the list's model
            continue
        field = current.model_fields.get(str(part)) if hasattr(current, "model_fields") else None
        if field is None:
            return []
        annotation = field.annotation
        candidates = [annotation, *getattr(annotation, "__args__", ())]
        nested = [c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)]
        if not nested:
            return []
        current = nested[0]
    return sorted(current.model_fields) if hasattr(current, "model_fields") else []


def _describe(error: Any, model: type[BaseModel]) -> tuple[KeyPath, str, str | None]:
    loc: KeyPath = tuple(part for part in error["loc"] if part != "[key]")
    kind = error["type"]
    if kind == "extra_forbidden":
        allowed = valid_keys(model, loc[:-1])
        close = difflib.get_close_matches(str(loc[-1]), allowed, n=3)
        hint = f"did you mean {', '.join(close)}?" if close else None
        if allowed:
            hint = (hint + " " if hint else "") + f"valid keys here: {', '.join(allowed)}"
        return loc, "unknown key", hint
    if kind == "missing":
        return loc, "required value is missing", "add this key"
    message = error["msg"]
    if message.startswith("Value error, "):
        message = message[len("Value error, ") :]
    given = error.get("input")
    if kind not in ("value_error", "assertion_error") and not isinstance(given, (dict, list)):
        message = f"{message} (got {_shown(given)})"
    return loc, message, None


def _shown(value: Any, width: int = 60) -> str:
    """repr() of a rejected value, cut short: a 4000-digit number would fill the screen (and
    repr() of an int beyond Python's int-string limit raises)."""
    if isinstance(value, int) and value.bit_length() > 200:
        return f"an integer of about {int(value.bit_length() * 0.30103) + 1} digits"
    text = repr(value)
    return text if len(text) <= width else f"{text[: width - 4]}...{text[-1]}"


def raise_validation_error(
    exc: ValidationError,
    model: type[BaseModel],
    where: Callable[[KeyPath], str],
    prefix: KeyPath = (),
) -> None:
    """Raise a UserError for the first few problems of `exc` (all listed, one per line)."""
    problems = [_describe(error, model) for error in exc.errors()]
    first_loc, first_message, first_hint = problems[0]
    lines = [first_message]
    for loc, message, hint in problems[1:6]:
        extra = f" ({hint})" if hint else ""
        lines.append(f"also {where((*prefix, *loc))}: {message}{extra}")
    raise UserError("\n".join(lines), where=where((*prefix, *first_loc)), hint=first_hint)
