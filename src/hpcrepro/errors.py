"""Errors a user can fix.

Anything the user wrote wrong (a YAML key, a path, a system name) raises `UserError`. The CLI prints
it as one readable block and exits with code 2; it never shows a traceback for these.
"""

from __future__ import annotations

import re

USER_ERROR_EXIT = 2
# Control characters other than the line breaks and tabs that lay a message out: a file name,
# a tar member or a log line quoted in a message must not move the cursor or retitle the window.
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def inert(text: str) -> str:
    """`text` with its control characters (but line breaks and tabs) written as \\xNN."""
    return _CONTROL.sub(lambda found: f"\\x{ord(found.group()):02x}", text)


class UserError(Exception):
    """A mistake in the user's input: says where it is, what is wrong and how to fix it."""

    def __init__(self, message: str, *, where: str | None = None, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.where = where
        self.hint = hint

    def render(self) -> str:
        """The text shown to the user, without markup; quoted names and data stay inert."""
        lines = [f"{self.where}: {self.message}" if self.where else self.message]
        if self.hint:
            lines.append(f"hint: {self.hint}")
        return inert("\n".join(lines))

    def __str__(self) -> str:
        return self.render()


def location(file: str | None, key: str | None = None, line: int | None = None) -> str:
    """Format 'file:line key' for error messages; any part may be missing."""
    parts = []
    if file:
        parts.append(f"{file}:{line}" if line else file)
    if key:
        parts.append(f"key '{key}'")
    return " ".join(parts)


def did_you_mean(name: str, valid: list[str], listing: str) -> str:
    """A hint for an unknown name: its close matches among `valid` (if any), then `listing`
    (what the valid names are, e.g. "partitions: gpu, debug")."""
    import difflib

    close = difflib.get_close_matches(name, valid, n=3)
    return (f"did you mean {', '.join(close)}? " if close else "") + listing
