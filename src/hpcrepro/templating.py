"""The one Jinja environment of every job script, strict twice over.

An undefined name fails (StrictUndefined), and a plain string printed without the `q` filter
fails too (the `finalize` hook), so no template can put an unquoted user value on a shell line.
Templates live in `templates/` as data; render (the training job), the campaign's helper stages,
the image builders, detect and prep all render through `render_template`.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import jinja2

from hpcrepro.resources import templates_dir
from hpcrepro.shell import quote


class ShellText(str):
    """Text that is already safe on a shell line (quoted, or a vetted literal)."""


def q(value: object) -> ShellText:
    """Jinja filter: one value as one quoted shell word.

    A word that starts with '=' is quoted too: after `export NAME=` it is the same value, but
    readers (and shellcheck) take `NAME==x` for a typo.
    """
    word = quote(value)
    return ShellText(f"'{word}'" if word.startswith("=") else word)


def qjoin(values: Iterable[object]) -> ShellText:
    """Jinja filter: a list as quoted shell words separated by spaces."""
    return ShellText(" ".join(quote(v) for v in values))


def _finalize(value: object) -> object:
    if isinstance(value, ShellText) or value is None:
        return "" if value is None else value
    if isinstance(value, bool):
        raise jinja2.TemplateError("booleans must be rendered explicitly (use a test, not output)")
    if isinstance(value, (int, float)):
        return value
    raise jinja2.TemplateError(
        f"unquoted value {value!r} in a template: pass it through the 'q' filter"
    )


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(templates_dir())),
        undefined=jinja2.StrictUndefined,
        finalize=_finalize,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
        autoescape=False,
    )
    env.filters["q"] = q
    env.filters["qjoin"] = qjoin
    env.filters["sbatch_literal"] = sbatch_literal
    return env


_ENV: jinja2.Environment | None = None


def render_template(name: str, **context: Any) -> str:
    """Render `templates/<name>` with the strict environment."""
    global _ENV
    if _ENV is None:
        _ENV = _environment()
    return _ENV.get_template(name).render(**context)


def sbatch_literal(text: object) -> str:
    """`text` for an sbatch filename pattern (--output, --error, --input) with no pattern in it:
    sbatch reads '%N', '%j'... there, and '%%' is a literal '%'."""
    return str(text).replace("%", "%%")
