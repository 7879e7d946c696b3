"""pydantic's validation errors as one readable UserError: the one place they are translated.

pydantic knows the key path and the problem; the YAML loader knows the file and line (`where`
turns a key path into 'file:line key ...' or '--set key'). This module joins the two and adds the
fix: for an unknown key the close matches among the valid keys, for a missing one the line to
add, for a wrong value what to write. The catalog, the site file, `--set` and detect's site keys
all go through `user_error`.
"""

from __future__ import annotations

import difflib
import typing
from collections.abc import Callable, Sequence
from typing import Any

from pydantic import BaseModel, ValidationError

from hpcrepro.errors import UserError

KeyPath = tuple[str | int, ...]
_LISTED = 6  # problems named one per line; the rest are counted


def _models_in(annotation: Any) -> list[Any]:
    """The annotation itself and what it wraps (Optional, list[...], dict[..., ...], Annotated)."""
    found = [annotation]
    for arg in typing.get_args(annotation):
        found.extend(_models_in(arg))
    return found


def valid_keys(model: type[BaseModel], path: Sequence[str | int]) -> list[str]:
    """The field names allowed at `path` (the parent of a rejected key) inside `model`: list
    indexes and the keys of a mapping of models (`versions.r3.0`) lead to the item's model."""
    current: Any = model
    parts = list(path)
    while parts:
        part = parts.pop(0)
        if isinstance(part, int):  # a list index: the items share the list's model
            continue
        fields = getattr(current, "model_fields", None)
        field = fields.get(str(part)) if fields else None
        if field is None:
            return []
        nested = [
            c
            for c in _models_in(field.annotation)
            if isinstance(c, type) and issubclass(c, BaseModel)
        ]
        if not nested:
            return []
        if typing.get_origin(field.annotation) is dict and parts:
            parts.pop(0)  # the mapping's key (a version, an implementation folder)
        current = nested[0]
    return list(current.model_fields) if hasattr(current, "model_fields") else []


def suggest(name: str, choices: Sequence[str]) -> str:
    """' (did you mean 'x'?)' for the close matches of `name` among `choices`, else ''."""
    close = difflib.get_close_matches(name, list(choices), n=3, cutoff=0.5)
    return f" (did you mean {', '.join(repr(c) for c in close)}?)" if close else ""


def _shown(value: Any, width: int = 60) -> str:
    """repr() of a rejected value, cut short: a 4000-digit number would fill the screen (and
    repr() of an int beyond Python's int-string limit raises)."""
    if isinstance(value, int) and value.bit_length() > 200:
        return f"an integer of about {int(value.bit_length() * 0.30103) + 1} digits"
    text = repr(value)
    return text if len(text) <= width else f"{text[: width - 4]}...{text[-1]}"


def _hint_for(kind: str, loc: KeyPath, docs: str | None) -> str | None:
    if kind.startswith(("int", "float")):
        return "write a plain number without quotes or units"
    if kind == "literal_error":
        return "use one of the values listed"
    if kind in ("dict_type", "model_type"):
        return "this key needs a mapping of 'name: value' lines below it"
    if "env" in loc:
        return "env maps variable names to text values"
    return f"see {docs} for the file format" if docs else None


def _describe(
    error: Any, model: type[BaseModel], docs: str | None
) -> tuple[KeyPath, str, str | None]:
    """(key path, what is wrong, how to fix it) of one pydantic error."""
    loc: KeyPath = tuple(part for part in error["loc"] if part != "[key]")
    kind = error["type"]
    name = str(loc[-1]) if loc else ""
    if kind == "extra_forbidden":
        allowed = valid_keys(model, loc[:-1])
        hint = f"valid keys here: {', '.join(allowed)}" if allowed else None
        return loc, f"unknown key '{name}'{suggest(name, allowed)}", hint
    if kind == "missing":
        return loc, f"required key '{name}' is missing", f"add '{name}:' with its value"
    given = error.get("input")
    if kind == "too_short" and isinstance(given, dict | list):
        return loc, f"no {name}", f"add at least one entry under '{name}'"
    message = error["msg"].removeprefix("Value error, ")
    if kind not in ("value_error", "assertion_error") and not isinstance(given, dict | list):
        message = f"{message} (got {_shown(given)})"
    if kind == "string_type" and isinstance(given, bool | int | float) and loc:
        # YAML read a word or number as a boolean or number ('false', 'yes', '1e3'): say how to
        # write it as text, in a file and on the command line.
        text = str(given).lower() if isinstance(given, bool) else str(given)
        dotted = ".".join(str(part) for part in loc)
        return loc, message, (
            f"YAML reads {text} as a {'boolean' if isinstance(given, bool) else 'number'}; "
            "quote it to mean the text: "
            f"{loc[-1]}: \"{text}\" in the file, or --set '{dotted}=\"{text}\"'"
        )
    return loc, message, _hint_for(kind, loc, docs)


def user_error(
    exc: ValidationError,
    model: type[BaseModel],
    where: Callable[[KeyPath], str],
    prefix: KeyPath = (),
    docs: str | None = None,
) -> UserError:
    """One UserError for every problem of `exc`: the first with its place and fix, the next few
    one per line ('also PLACE: ...'). Unknown keys, when there are any, are all that is shown: a
    typo also makes the real key 'missing' or default, and the typo is the cause. `docs` names
    the file format's documentation."""
    errors = sorted(exc.errors(), key=lambda error: error["type"] != "extra_forbidden")
    unknown = [error for error in errors if error["type"] == "extra_forbidden"]
    if unknown:
        # A misspelt key leaves the real one at its default ('runtme: none' keeps runtime
        # pyxis), so what the other checks say would mislead: only the unknown keys are shown.
        errors = unknown
    problems = [_describe(error, model, docs) for error in errors]
    first_loc, first_message, first_hint = problems[0]
    lines = [first_message]
    for loc, message, hint in problems[1:_LISTED]:
        lines.append(f"also {where((*prefix, *loc))}: {message}" + (f" ({hint})" if hint else ""))
    if len(problems) > _LISTED:
        lines.append(f"(and {len(problems) - _LISTED} more problems)")
    return UserError("\n".join(lines), where=where((*prefix, *first_loc)), hint=first_hint)
