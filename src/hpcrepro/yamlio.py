"""Load YAML while remembering where every key was written.

Error messages must name the file and line of a bad key; PyYAML's plain loader forgets both and
silently keeps the last of two duplicate keys. This loader composes the node tree, records the line
of each mapping key under its dotted path, and refuses duplicates. It also keeps what a user wrote
where YAML 1.1 would change it: mapping keys are always text (`1:` is the key '1'), and callers
may ask for numbers to stay text (`010` stays '010', not 8; `1:30` stays '1:30', not 90).
Hostile files (deep nesting, alias bombs, devices, huge files) become UserErrors, never hangs or
tracebacks.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from hpcrepro.errors import UserError, location
from hpcrepro.safeopen import read_user_file

KeyPath = tuple[str | int, ...]
TextPaths = Callable[[KeyPath], bool]


@dataclass
class YamlDocument:
    """A loaded YAML file: its data and the 1-based line of each key path."""

    path: Path
    data: Any
    lines: dict[KeyPath, int] = field(default_factory=dict)

    def line_of(self, key_path: KeyPath) -> int | None:
        """Line of `key_path`, or of its closest parent that has one."""
        parts = tuple(part if isinstance(part, int) else str(part) for part in key_path)
        for end in range(len(parts), 0, -1):
            line = self.lines.get(parts[:end])
            if line is not None:
                return line
        return None

    def where(self, key_path: KeyPath) -> str:
        return location(str(self.path), dotted_key(key_path) or None, self.line_of(key_path))


def dotted_key(key_path: KeyPath) -> str:
    """'a.b.0' for messages; a part with a line break or other control character is shown quoted."""
    return ".".join(str(part) if str(part).isprintable() else repr(str(part)) for part in key_path)


# Nodes a configuration file may expand to: far above any real file, far below what aliases
# nested a few levels deep ("billion laughs") would build.
MAX_NODES = 100_000
# Nesting depth of lists and mappings: real files use a handful of levels; PyYAML's composer
# recurses once per level and would hit Python's recursion limit near 500.
MAX_DEPTH = 50
# A configuration file is a few KB; anything this large is the wrong file.
MAX_FILE_BYTES = 1024 * 1024

_MERGE_TAG = "tag:yaml.org,2002:merge"
_STR_TAG = "tag:yaml.org,2002:str"
_NULL_TAG = "tag:yaml.org,2002:null"
_SEQ_TAG = "tag:yaml.org,2002:seq"
_MAP_TAG = "tag:yaml.org,2002:map"
# Plain scalars whose YAML 1.1 reading would change the written text (octal, sexagesimal, 1e3).
_TEXT_KEEPING_TAGS = {
    "tag:yaml.org,2002:int",
    "tag:yaml.org,2002:float",
    "tag:yaml.org,2002:timestamp",
}


_TAG_NAMES = {
    "tag:yaml.org,2002:int": "an integer",
    "tag:yaml.org,2002:float": "a number",
    "tag:yaml.org,2002:timestamp": "a date",
    "tag:yaml.org,2002:bool": "true or false",
}


def _clip(text: str, width: int = 40) -> str:
    shown = text if len(text) <= width else f"{text[: width - 3]}..."
    return repr(shown)


def _conversion_problem(exc: Exception) -> str:
    digits = re.search(r"value has (\d+) digits", str(exc))
    if digits:
        return (
            f"it has {digits.group(1)} digits, more than the {sys.get_int_max_str_digits()} "
            "Python reads"
        )
    if isinstance(exc, ValueError) and str(exc):
        return str(exc)
    return "not a valid value of that kind"


def unprintable(text: str) -> tuple[int, str] | None:
    """The first character YAML refuses, as (index, what it is), or None: a control character,
    or a byte that was not UTF-8 (Python keeps those of argv and files as U+DC80-U+DCFF)."""
    found = yaml.reader.Reader.NON_PRINTABLE.search(text)
    if found is None:
        return None
    char = found.group()
    if "\udc80" <= char <= "\udcff":
        return found.start(), f"the byte 0x{ord(char) - 0xDC00:02x}, which is not UTF-8 text"
    name = "a NUL byte" if char == "\0" else "a control character"
    return found.start(), f"{name} (U+{ord(char):04X}), which YAML does not allow"


class YamlUnprintable(UserError):
    """A control character or non-UTF-8 byte: never read as plain text, like YamlTooDeep."""


def _unprintable_error(text: str, path: Path | str) -> YamlUnprintable | None:
    found = unprintable(text)
    if found is None:
        return None
    index, what = found
    line = text.count("\n", 0, index) + 1
    column = index - (text.rfind("\n", 0, index) + 1) + 1
    return YamlUnprintable(
        f"column {column} holds {what}",
        where=location(str(path), line=line),
        hint="remove it (a damaged or binary file? 'cat -A' shows such characters)",
    )


class _DepthLimitedLoader(yaml.SafeLoader):
    """SafeLoader whose composer refuses nesting beyond MAX_DEPTH and notes any alias."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.depth = 0
        self.composed = 0
        self.saw_alias = False

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            self.saw_alias = True
            return super().compose_node(parent, index)
        self.depth += 1
        self.composed += 1
        try:
            if self.depth > MAX_DEPTH:
                raise _TooDeep(self.peek_event().start_mark.line + 1)
            if self.composed > MAX_NODES:
                raise _too_many(self.name, self.peek_event().start_mark.line + 1, False)
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1


class YamlTooDeep(UserError):
    """Nesting beyond MAX_DEPTH: never read as plain text, unlike other YAML errors of --set."""


class _TooDeep(Exception):
    def __init__(self, line: int | None) -> None:
        super().__init__(line)
        self.line = line


def _too_deep(path: Path | str, line: int | None) -> YamlTooDeep:
    return YamlTooDeep(
        f"the YAML is nested too deeply (more than {MAX_DEPTH} levels of lists or mappings)",
        where=location(str(path), line=line),
        hint="a configuration needs a few levels; check for stray '[' or '{'",
    )


def _too_many(path: str, line: int, aliases: bool) -> UserError:
    if aliases:
        return UserError(
            f"the YAML expands to more than {MAX_NODES} values",
            where=location(path, line=line),
            hint="aliases (*name) nested inside each other multiply; write the values out",
        )
    return UserError(
        f"the YAML holds more than {MAX_NODES} values",
        where=location(path, line=line),
        hint="a configuration file holds a few dozen values; is this the right file?",
    )


class _Builder:
    """Build Python values from the node tree, recording key lines; refuse alias bombs and loops."""

    def __init__(
        self, doc: YamlDocument, loader: _DepthLimitedLoader, text_paths: TextPaths | None
    ) -> None:
        self.doc, self.loader, self.text_paths = doc, loader, text_paths
        self.built = 0
        self.depth = 0
        self.open: set[int] = set()  # collections being built: meeting one again is a loop

    def _where(self, node: yaml.Node) -> str:
        return location(str(self.doc.path), line=node.start_mark.line + 1)

    def build(self, node: yaml.Node, path: KeyPath) -> Any:
        self.built += 1
        if self.built > MAX_NODES:
            raise _too_many(str(self.doc.path), node.start_mark.line + 1, self.loader.saw_alias)
        if isinstance(node, yaml.ScalarNode):
            return self._scalar(node, path)
        if id(node) in self.open:
            raise UserError(
                "a YAML alias refers to the collection it is in",
                where=self._where(node),
                hint="an anchor (&name) cannot be used (*name) inside its own value",
            )
        if node.tag not in (_SEQ_TAG, _MAP_TAG):
            raise UserError(
                f"cannot read this value: the tag {node.tag} is not allowed",
                where=self._where(node),
                hint="write plain lists and mappings; tags such as !!python/... are not allowed",
            )
        self.depth += 1  # aliases can stack nesting beyond what the composer saw
        if self.depth > MAX_DEPTH:
            raise _too_deep(self.doc.path, node.start_mark.line + 1)
        self.open.add(id(node))
        try:
            if isinstance(node, yaml.SequenceNode):
                return self._sequence(node, path)
            assert isinstance(node, yaml.MappingNode)
            return self._mapping(node, path)
        finally:
            self.open.discard(id(node))
            self.depth -= 1

    def _scalar(self, node: yaml.ScalarNode, path: KeyPath) -> Any:
        if (
            node.tag in _TEXT_KEEPING_TAGS
            and node.style is None
            and self.text_paths is not None
            and self.text_paths(path)
        ):
            return node.value  # kept as written, so never converted (nor refused)
        try:
            return self.loader.construct_object(node, deep=True)
        except yaml.constructor.ConstructorError as exc:
            raise UserError(
                f"cannot read this value: {exc.problem}",
                where=self._where(node),
                hint="write plain text, numbers, true/false, lists and mappings; "
                "tags such as !!python/... are not allowed",
            ) from None
        except (ValueError, KeyError, AttributeError, TypeError, OverflowError) as exc:
            # PyYAML converts with int(), float(), datetime(): 2024-13-45, '!!int abc' and
            # a 5000-digit number raise from there
            raise UserError(
                f"cannot read {_clip(node.value)} as {_TAG_NAMES.get(node.tag, node.tag)}: "
                f"{_conversion_problem(exc)}",
                where=self._where(node),
                hint="quote the value to keep it as text, or write a valid one",
            ) from None

    def _key(self, node: yaml.Node) -> str:
        """A mapping key as the text written: `1:` is '1', `3.10:` is '3.10', `null:` is refused."""
        if not isinstance(node, yaml.ScalarNode):
            raise UserError("mapping keys must be plain names", where=self._where(node))
        if node.tag == _STR_TAG:
            return str(node.value)
        if node.tag == _NULL_TAG or node.value == "":
            raise UserError(
                "a key is empty (YAML reads '~', 'null' or nothing before ':' as no key)",
                where=self._where(node),
                hint="write the key's name, or quote it if 'null' is meant as a name",
            )
        if node.tag.startswith("tag:yaml.org,2002:") and node.tag != "tag:yaml.org,2002:binary":
            return str(node.value)  # int, float, bool, timestamp: keep the text as written
        raise UserError(
            f"a key is tagged {node.tag}: keys must be plain names", where=self._where(node)
        )

    def _sequence(self, node: yaml.SequenceNode, path: KeyPath) -> list[Any]:
        items = []
        for index, item_node in enumerate(node.value):
            self.doc.lines[(*path, index)] = item_node.start_mark.line + 1
            items.append(self.build(item_node, (*path, index)))
        return items

    def _merged(self, node: yaml.Node, path: KeyPath) -> dict[str, Any]:
        """The mappings named by a `<<:` key; in a list, earlier mappings win (YAML 1.1)."""
        sources = node.value if isinstance(node, yaml.SequenceNode) else [node]
        merged: dict[str, Any] = {}
        for source in sources:
            if not isinstance(source, yaml.MappingNode):
                raise UserError(
                    "'<<' merges mappings: its value must be a mapping or a list of mappings",
                    where=self._where(source),
                    hint="write '<<: *name' where '&name' marks a mapping",
                )
            for key, value in self.build(source, path).items():
                merged.setdefault(key, value)
        return merged

    def _mapping(self, node: yaml.MappingNode, path: KeyPath) -> dict[str, Any]:
        merged: dict[str, Any] = {}
        explicit: list[tuple[yaml.Node, yaml.Node]] = []
        merge_seen = False
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE_TAG:
                if merge_seen:
                    raise UserError(
                        "'<<' is given twice in one mapping",
                        where=self._where(key_node),
                        hint="merge several mappings with one key: '<<: [*a, *b]'",
                    )
                merge_seen = True
                merged = self._merged(value_node, path)
            else:
                explicit.append((key_node, value_node))
        result: dict[str, Any] = {}
        for key_node, value_node in explicit:
            line = key_node.start_mark.line + 1
            key = self._key(key_node)
            if key in result:
                raise UserError(
                    f"key '{key}' is given twice",
                    where=location(str(self.doc.path), line=line),
                    hint="remove one of the two; YAML would silently keep only the last",
                )
            child = (*path, key)
            self.doc.lines[child] = line
            result[key] = self.build(value_node, child)
        return {**{k: v for k, v in merged.items() if k not in result}, **result}


def _syntax_hint(problem: str) -> str:
    if "'\\t'" in problem:
        return "YAML indents with spaces only: replace the tab with spaces"
    if "another document" in problem:
        return "a configuration file is one YAML document: remove the second '---' part"
    return "check indentation and quoting; values with ': ' or '#' need quotes"


def load_yaml(path: Path, text_paths: TextPaths | None = None) -> YamlDocument:
    """Read `path` into a YamlDocument; any read or syntax problem becomes a UserError.

    Plain numbers and dates at key paths where `text_paths(path)` is true keep their text.
    """
    path = Path(path)
    return parse_yaml(read_user_file(path, MAX_FILE_BYTES), path, text_paths)


def parse_yaml(text: str, path: Path | str, text_paths: TextPaths | None = None) -> YamlDocument:
    """Parse YAML text that came from `path` (a file, or e.g. '--set key': used in messages)."""
    doc = YamlDocument(path=Path(path), data=None)
    refused = _unprintable_error(text, path)  # PyYAML's reader refuses them with a traceback
    if refused is not None:
        raise refused
    loader = _DepthLimitedLoader(text)
    loader.name = str(path)
    try:
        root = loader.get_single_node()
        if root is not None:
            doc.data = _Builder(doc, loader, text_paths).build(root, ())
    except _TooDeep as exc:
        raise _too_deep(path, exc.line) from None
    except RecursionError:
        raise _too_deep(path, None) from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        line = mark.line + 1 if mark is not None else None
        raise UserError(
            f"invalid YAML: {exc.problem}",
            where=location(str(path), line=line),
            hint=_syntax_hint(str(exc.problem)),
        ) from None
    except yaml.YAMLError as exc:
        raise UserError(f"invalid YAML: {exc}", where=str(path)) from None
    finally:
        loader.dispose()
    return doc
