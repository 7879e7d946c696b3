"""Read a Dockerfile of NVIDIA's shape into build steps that enroot and Apptainer can replay.

podman and docker read the Dockerfile themselves; enroot and Apptainer have no Dockerfile
frontend, so their builders replay the steps this module produces. The rules are Docker's
(BuildKit's parser and shell-word lexer): line continuations with the escape character (and the
`# escape=` directive), comments, JSON and shell forms, `$VAR` / `${VAR}` / `${VAR:-x}` /
`${VAR:+x}` substitution in ENV, ARG, LABEL, WORKDIR, COPY and FROM (never in RUN text: the shell
expands that), ENV values taken from the environment *before* the instruction, ARG values as
environment of later RUN steps, relative WORKDIR and COPY destinations resolved against the
working folder. What cannot be replayed exactly (ADD, COPY --from/--chown, heredocs, several
stages, wildcards, USER other than root, ENTRYPOINT/CMD, ...) stops with the line and the fix
(use the podman builder), never a silent approximation. spython's converter was tried first and
puts `COPY . .` at the container root instead of the WORKDIR, runs every COPY before every RUN,
leaves ENV values unquoted and hard-codes the ARG default, so it is not used.
"""

from __future__ import annotations

import json
import posixpath
import re
from dataclasses import dataclass, field
from pathlib import Path

from hpcrepro.errors import UserError

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_DIRECTIVE = re.compile(r"^#\s*([A-Za-z]+)\s*=\s*(.*?)\s*$")
# Instructions with no effect on an image that enroot or Apptainer runs.
_IGNORED = frozenset({"EXPOSE", "MAINTAINER", "STOPSIGNAL", "HEALTHCHECK"})
_REPLAYED = frozenset({"ARG", "FROM", "RUN", "WORKDIR", "COPY", "ENV", "LABEL", "SHELL", "USER"})
_PODMAN_ONLY = {
    "ADD": "ADD unpacks archives and fetches URLs; write COPY for local files",
    "ENTRYPOINT": "ENTRYPOINT would replace the base image's entrypoint",
    "CMD": "CMD would replace the base image's command",
    "VOLUME": "VOLUME has no equivalent here",
    "ONBUILD": "ONBUILD has no equivalent here",
}
DEFAULT_SHELL = ("/bin/sh", "-c")


@dataclass(frozen=True)
class Instruction:
    """One instruction as written: keyword, argument text (continuations joined), line."""

    keyword: str
    text: str
    line: int


@dataclass(frozen=True)
class Run:
    """Run `argv` in `workdir` with `env` (the Dockerfile's ENV and ARG values so far)."""

    argv: tuple[str, ...]
    workdir: str
    env: tuple[tuple[str, str], ...]
    line: int


@dataclass(frozen=True)
class Copy:
    """Copy `sources` (relative to the build context) to `dest` (absolute)."""

    sources: tuple[str, ...]
    dest: str
    dest_is_dir: bool
    line: int


@dataclass(frozen=True)
class MakeDir:
    """WORKDIR creates its folder."""

    path: str
    line: int


Step = Run | Copy | MakeDir


@dataclass
class Recipe:
    """What a Dockerfile does on top of its base: the steps in order, and the image config."""

    base: str
    steps: list[Step] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)  # ENV set by the Dockerfile, in order
    workdir: str | None = None  # the last WORKDIR, None when the Dockerfile sets none
    labels: dict[str, str] = field(default_factory=dict)
    build_args: dict[str, str] = field(default_factory=dict)  # ARGs the build used


def _fail(where: str, line: int, message: str, hint: str | None = None) -> UserError:
    return UserError(message, where=f"{where}:{line}", hint=hint)


def split_instructions(text: str, where: str) -> list[Instruction]:
    """Instructions of a Dockerfile, with Docker's continuation, comment and directive rules."""
    lines = text.splitlines()
    escape = "\\"
    index = 0
    # Parser directives: only at the very top, before any comment, blank line or instruction.
    while index < len(lines):
        match = _DIRECTIVE.match(lines[index])
        if not match:
            break
        name, value = match.group(1).lower(), match.group(2)
        if name == "escape":
            if value not in ("\\", "`"):
                raise _fail(where, index + 1, f"escape directive '{value}' is not '\\' or '`'")
            escape = value
        elif name not in ("syntax", "check"):
            break
        index += 1
    result: list[Instruction] = []
    while index < len(lines):
        stripped = lines[index].lstrip()
        start = index
        index += 1
        if not stripped or stripped.startswith("#"):
            continue
        parts = []
        current = stripped
        while True:
            body = current.rstrip()
            if body.endswith(escape):
                parts.append(body[: -len(escape)])
                # skip comment and empty lines inside a continuation, as BuildKit does
                while index < len(lines) and (
                    not lines[index].strip() or lines[index].lstrip().startswith("#")
                ):
                    index += 1
                if index >= len(lines):
                    break
                current = lines[index]
                index += 1
                continue
            parts.append(current)
            break
        joined = "".join(parts).strip()
        keyword, _, rest = joined.partition(" ")
        if "\t" in keyword:
            keyword, _, tail = keyword.partition("\t")
            rest = f"{tail} {rest}"
        result.append(Instruction(keyword.upper(), rest.strip(), start + 1))
    return result


# ---- shell words, as BuildKit's lexer reads them --------------------------------------------


class _Lexer:
    def __init__(self, text: str, env: dict[str, str], escape: str, where: str, line: int):
        self.text, self.env, self.escape = text, env, escape
        self.where, self.line = where, line
        self.pos = 0
        self.unknown: list[str] = []  # variables referenced but not defined

    def words(self, split: bool) -> list[str]:
        """Process the text: quotes removed, variables substituted; split at white space."""
        words: list[str] = []
        current: list[str] = []
        started = False
        while self.pos < len(self.text):
            ch = self.text[self.pos]
            if split and ch.isspace():
                if started:
                    words.append("".join(current))
                    current, started = [], False
                self.pos += 1
                continue
            started = True
            if ch == "'":
                current.append(self._single())
            elif ch == '"':
                current.append(self._double())
            elif ch == self.escape:
                self.pos += 1
                if self.pos < len(self.text):
                    current.append(self.text[self.pos])
                    self.pos += 1
            elif ch == "$":
                current.append(self._dollar())
            else:
                current.append(ch)
                self.pos += 1
        if started:
            words.append("".join(current))
        return words

    def _single(self) -> str:
        end = self.text.find("'", self.pos + 1)
        if end < 0:
            raise _fail(self.where, self.line, f"unmatched ' in {self.text!r}")
        value = self.text[self.pos + 1 : end]
        self.pos = end + 1
        return value

    def _double(self) -> str:
        out: list[str] = []
        self.pos += 1
        while self.pos < len(self.text):
            ch = self.text[self.pos]
            if ch == '"':
                self.pos += 1
                return "".join(out)
            if ch == self.escape and self.pos + 1 < len(self.text):
                following = self.text[self.pos + 1]
                if following in ('"', "$", self.escape):
                    out.append(following)
                    self.pos += 2
                    continue
            if ch == "$":
                out.append(self._dollar())
                continue
            out.append(ch)
            self.pos += 1
        raise _fail(self.where, self.line, f'unmatched " in {self.text!r}')

    def _lookup(self, name: str) -> str | None:
        value = self.env.get(name)
        if value is None:
            self.unknown.append(name)
        return value

    def _dollar(self) -> str:
        text = self.text
        self.pos += 1
        if self.pos < len(text) and text[self.pos] == "{":
            end = text.find("}", self.pos)
            if end < 0:
                raise _fail(self.where, self.line, f"missing '}}' in {text!r}")
            body = text[self.pos + 1 : end]
            self.pos = end + 1
            match = _NAME.match(body)
            if not match:
                raise _fail(self.where, self.line, f"'${{{body}}}' is not a variable reference")
            name, op = match.group(), body[match.end() :]
            value = self._lookup(name)
            if not op:
                return value or ""
            for modifier in (":-", ":+", ":?", "-", "+", "?"):
                if op.startswith(modifier):
                    word = _Lexer(
                        op[len(modifier) :], self.env, self.escape, self.where, self.line
                    ).words(split=False)
                    alt = word[0] if word else ""
                    empty = not value if modifier.startswith(":") else value is None
                    if modifier.endswith("-"):
                        return alt if empty else value or ""
                    if modifier.endswith("+"):
                        return "" if empty else alt
                    if empty:
                        raise _fail(self.where, self.line, f"{name}: {alt or 'is not set'}")
                    return value or ""
            raise _fail(
                self.where,
                self.line,
                f"'${{{body}}}' uses a substitution this builder does "
                "not replay (only :-, :+, :?, -, +, ?)",
                "use the podman builder",
            )
        match = _NAME.match(text, self.pos)
        if not match:
            return "$"
        self.pos = match.end()
        return self._lookup(match.group()) or ""


def _words(
    instr: Instruction,
    text: str,
    env: dict[str, str],
    escape: str,
    where: str,
    *,
    split: bool = True,
    strict: bool = False,
) -> list[str]:
    lexer = _Lexer(text, env, escape, where, instr.line)
    words = lexer.words(split)
    if strict and lexer.unknown:
        raise _fail(
            where,
            instr.line,
            f"{instr.keyword} uses ${lexer.unknown[0]}, which neither the Dockerfile nor the "
            "base image defines here",
            "define it with ARG or ENV first, or use the podman builder",
        )
    return words


def _json_list(text: str) -> list[str] | None:
    if not text.startswith("["):
        return None
    try:
        value = json.loads(text)
    except ValueError:
        return None
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return value
    return None


def _pairs(
    instr: Instruction, env: dict[str, str], escape: str, where: str, strict: bool
) -> list[tuple[str, str]]:
    """NAME=VALUE pairs of ENV, ARG and LABEL (and the old `ENV NAME VALUE` form)."""
    first = instr.text.split(None, 1)
    if not first:
        raise _fail(where, instr.line, f"{instr.keyword} needs NAME=VALUE")
    if instr.keyword == "ENV" and "=" not in first[0]:
        name = first[0]
        value = _words(
            instr,
            first[1] if len(first) > 1 else "",
            env,
            escape,
            where,
            split=False,
            strict=strict,
        )
        return [(name, value[0] if value else "")]
    pairs = []
    for word in _raw_words(instr.text, escape):
        name, sep, raw = word.partition("=")
        if instr.keyword != "ARG" and not sep:
            raise _fail(where, instr.line, f"'{word}' in {instr.keyword} is not NAME=VALUE")
        value = _words(instr, raw, env, escape, where, split=False, strict=strict) if sep else []
        pairs.append((name, value[0] if value else ("" if sep else "\0unset")))
    return pairs


def _raw_words(text: str, escape: str) -> list[str]:
    """Split at unquoted white space, keeping quotes and escapes for the later expansion."""
    words, current, quote, i = [], "", "", 0
    while i < len(text):
        ch = text[i]
        if ch == escape and i + 1 < len(text) and quote != "'":
            current += text[i : i + 2]
            i += 2
            continue
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch.isspace():
            if current:
                words.append(current)
            current = ""
            i += 1
            continue
        current += ch
        i += 1
    if current:
        words.append(current)
    return words


def _flags(words: list[str]) -> tuple[list[str], list[str]]:
    flags = []
    while words and words[0].startswith("--"):
        flags.append(words.pop(0))
    return flags, words


def _absolute(path: str, workdir: str | None, instr: Instruction, where: str) -> str:
    if path.startswith("/"):
        return posixpath.normpath(path) if path != "/" else "/"
    if workdir is None:
        raise _fail(
            where,
            instr.line,
            f"{instr.keyword} uses the relative path '{path}' before any absolute WORKDIR: the "
            "base image's working folder is not known to this builder",
            "start with an absolute WORKDIR, or use the podman builder",
        )
    return posixpath.normpath(posixpath.join(workdir, path))


def recipe(
    text: str,
    where: str,
    *,
    build_args: dict[str, str],
    context: Path | None,
    base_env: dict[str, str] | None = None,
    base_workdir: str | None = None,
    builder: str = "enroot",
) -> Recipe:
    """The steps of a one-stage Dockerfile, for a builder that replays them (enroot, Apptainer).

    `build_args` are `--build-arg` values (FROM_IMAGE_NAME among them). `base_env` is the base
    image's environment when the builder knows it (enroot reads it); with None, a Dockerfile that
    reads a variable it does not define itself is refused rather than guessed. `base_workdir` is
    the base image's WORKDIR when known; otherwise RUN steps before the first WORKDIR run in `/`
    (NVIDIA's apt-get step does not depend on it) and a relative path there is refused.
    `context` is the build context, to check that every COPY source exists (None: unchecked).
    """
    escape = "`" if re.match(r"^#\s*escape\s*=\s*`", text) else "\\"
    instructions = split_instructions(text, where)
    strict = base_env is None
    global_args: dict[str, str] = {}
    result: Recipe | None = None
    env: dict[str, str] = dict(base_env or {})
    args: dict[str, str] = {}
    workdir: str | None = base_workdir
    shell: tuple[str, ...] = DEFAULT_SHELL
    for instr in instructions:
        keyword = instr.keyword
        if keyword in _IGNORED:
            continue
        if keyword in _PODMAN_ONLY:
            raise _fail(
                where,
                instr.line,
                f"{keyword} cannot be replayed by the {builder} builder: {_PODMAN_ONLY[keyword]}",
                "remove it, or build with --builder podman",
            )
        if keyword not in _REPLAYED:
            raise _fail(
                where,
                instr.line,
                f"unknown instruction '{keyword}'",
                "see the Dockerfile reference; supported here: " + ", ".join(sorted(_REPLAYED)),
            )
        if keyword == "ARG" and result is None:
            for name, value in _pairs(instr, global_args, escape, where, strict=False):
                global_args[name] = build_args.get(name, "" if value == "\0unset" else value)
            continue
        if keyword == "FROM":
            if result is not None:
                raise _fail(
                    where,
                    instr.line,
                    f"a second FROM: the {builder} builder replays one stage only",
                    "build multi-stage Dockerfiles with --builder podman",
                )
            scope = {**global_args, **{k: v for k, v in build_args.items() if k in global_args}}
            words = _words(instr, instr.text, scope, escape, where)
            flags, words = _flags(words)
            if flags or len(words) != 1:
                raise _fail(
                    where,
                    instr.line,
                    f"FROM '{instr.text}' is not FROM IMAGE",
                    "one stage without --platform or AS is replayed here",
                )
            if not words[0] or words[0] == "REDACTED":
                raise _fail(
                    where,
                    instr.line,
                    f"FROM names no usable base image ('{words[0]}')",
                    "give the base with --base (the catalog's container_base is the default)",
                )
            result = Recipe(
                base=words[0], build_args={k: v for k, v in build_args.items() if k in global_args}
            )
            continue
        if result is None:
            raise _fail(where, instr.line, f"{keyword} before FROM")
        scope = {**args, **env}
        if keyword == "ARG":
            for name, value in _pairs(instr, scope, escape, where, strict):
                if value == "\0unset" and name not in build_args and name not in global_args:
                    continue  # declared without a value: unset, as in Docker
                default = global_args.get(name, "") if value == "\0unset" else value
                args[name] = build_args.get(name, default)
                if name in build_args:
                    result.build_args[name] = build_args[name]
        elif keyword == "ENV":
            for name, value in _pairs(instr, scope, escape, where, strict):
                if not _NAME.fullmatch(name):
                    raise _fail(where, instr.line, f"'{name}' is not an environment variable name")
                env[name] = value
                result.env[name] = value
        elif keyword == "LABEL":
            for name, value in _pairs(instr, scope, escape, where, strict):
                result.labels[_words(instr, name, scope, escape, where, split=False)[0]] = value
        elif keyword == "WORKDIR":
            words = _words(instr, instr.text, scope, escape, where, split=False, strict=strict)
            workdir = _absolute(words[0] if words else "", workdir, instr, where)
            result.workdir = workdir
            result.steps.append(MakeDir(workdir, instr.line))
        elif keyword == "USER":
            user = _words(instr, instr.text, scope, escape, where, split=False)[0]
            if user not in ("root", "0", "root:root", "0:0"):
                raise _fail(
                    where,
                    instr.line,
                    f"USER {user}: the {builder} builder runs every step as root",
                    "build with --builder podman",
                )
        elif keyword == "SHELL":
            argv = _json_list(instr.text)
            if not argv:
                raise _fail(
                    where, instr.line, 'SHELL needs the JSON form, e.g. ["/bin/bash", "-c"]'
                )
            shell = tuple(argv)
        elif keyword == "RUN":
            argv = _json_list(instr.text)
            if instr.text.startswith("--"):
                raise _fail(
                    where,
                    instr.line,
                    "RUN --mount/--network options are not replayed",
                    "build with --builder podman",
                )
            if argv is None and re.search(r"<<-?['\"]?[A-Za-z_]", instr.text):
                raise _fail(
                    where,
                    instr.line,
                    "heredocs in RUN are not replayed",
                    "write the commands on the RUN line, or build with --builder podman",
                )
            run_argv = tuple(argv) if argv is not None else (*shell, instr.text)
            result.steps.append(
                Run(
                    run_argv,
                    workdir or base_workdir or "/",
                    tuple({**args, **env}.items()),
                    instr.line,
                )
            )
        elif keyword == "COPY":
            result.steps.append(_copy(instr, scope, escape, where, workdir, context, strict))
    if result is None:
        raise UserError("the Dockerfile has no FROM", where=where)
    return result


def _copy(
    instr: Instruction,
    scope: dict[str, str],
    escape: str,
    where: str,
    workdir: str | None,
    context: Path | None,
    strict: bool,
) -> Copy:
    listed = _json_list(instr.text)
    if listed is not None:
        words = listed
    else:
        words = _words(instr, instr.text, scope, escape, where, strict=strict)
    flags, words = _flags(words)
    if flags:
        raise _fail(
            where,
            instr.line,
            f"COPY {' '.join(flags)} is not replayed",
            "copy without options, or build with --builder podman",
        )
    if len(words) < 2:
        raise _fail(where, instr.line, "COPY needs at least one source and a destination")
    *sources, dest = words
    cleaned = []
    for source in sources:
        if any(ch in source for ch in "*?["):
            raise _fail(
                where,
                instr.line,
                f"COPY source '{source}' has a wildcard, which is not replayed",
                "name the files, or build with --builder podman",
            )
        normal = posixpath.normpath(source.lstrip("/")) if source.strip("/") else "."
        if normal == ".." or normal.startswith("../"):
            raise _fail(where, instr.line, f"COPY source '{source}' is outside the build context")
        if context is not None and not (context / normal).exists():
            raise _fail(
                where, instr.line, f"COPY source '{source}' is not in the code folder {context}"
            )
        cleaned.append(normal)
    dest_is_dir = dest.endswith("/") or dest in (".", "./") or len(cleaned) > 1
    return Copy(tuple(cleaned), _absolute(dest, workdir, instr, where), dest_is_dir, instr.line)
