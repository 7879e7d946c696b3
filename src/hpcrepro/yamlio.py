"""Load YAML while remembering where every key was written.

Error messages must name the file and line of a bad key; PyYAML's plain loader forgets both and
silently keeps the last of two duplicate keys. This loader composes the node tree, records the line
of each mapping key under its dotted path, and refuses duplicates.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from hpcrepro.errors import UserError, location

KeyPath = tuple[str | int, ...]


@dataclass
class YamlDocument:
    """A loaded YAML file: its data and the 1-based line of each key path."""

    path: Path
    data: Any
    lines: dict[KeyPath, int] = field(default_factory=dict)

    def line_of(self, key_path: KeyPath) -> int | None:
        """Line of `key_path`, or of its closest parent that has one."""
        for end in range(len(key_path), 0, -1):
            line = self.lines.get(tuple(key_path[:end]))
            if line is not None:
                return line
        return None

    def where(self, key_path: KeyPath) -> str:
        dotted = ".".join(str(part) for part in key_path) or None
        return location(str(self.path), dotted, self.line_of(key_path))


# Nodes a configuration file may expand to: far above any real file, far below what aliases
# nested a few levels deep ("billion laughs") would build.
MAX_NODES = 100_000


class _Builder:
    """Build Python values from the node tree, recording key lines; refuse alias bombs and loops."""

    def __init__(self, doc: YamlDocument, loader: yaml.SafeLoader) -> None:
        self.doc, self.loader = doc, loader
        self.built = 0
        self.open: set[int] = set()  # collections being built: meeting one again is a loop

    def build(self, node: yaml.Node, path: KeyPath) -> Any:
        self.built += 1
        if self.built > MAX_NODES:
            raise UserError(
                f"the YAML expands to more than {MAX_NODES} values",
                where=location(str(self.doc.path), line=node.start_mark.line + 1),
                hint="aliases (*name) nested inside each other multiply; write the values out",
            )
        if not isinstance(node, yaml.MappingNode | yaml.SequenceNode):
            return self.loader.construct_object(node, deep=True)
        if id(node) in self.open:
            raise UserError(
                "a YAML alias refers to the collection it is in",
                where=location(str(self.doc.path), line=node.start_mark.line + 1),
                hint="an anchor (&name) cannot be used (*name) inside its own value",
            )
        self.open.add(id(node))
        try:
            if isinstance(node, yaml.SequenceNode):
                return self._sequence(node, path)
            return self._mapping(node, path)
        finally:
            self.open.discard(id(node))

    def _sequence(self, node: yaml.SequenceNode, path: KeyPath) -> list[Any]:
        items = []
        for index, item_node in enumerate(node.value):
            self.doc.lines[(*path, index)] = item_node.start_mark.line + 1
            items.append(self.build(item_node, (*path, index)))
        return items

    def _mapping(self, node: yaml.MappingNode, path: KeyPath) -> dict[Any, Any]:
        result: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            line = key_node.start_mark.line + 1
            if isinstance(key_node, yaml.MappingNode | yaml.SequenceNode):
                raise UserError("mapping keys must be plain names",
                                where=location(str(self.doc.path), line=line))
            key = self.loader.construct_object(key_node, deep=True)
            if key in result:
                raise UserError(
                    f"key '{key}' is given twice",
                    where=location(str(self.doc.path), line=line),
                    hint="remove one of the two; YAML would silently keep only the last",
                )
            child = (*path, str(key))
            self.doc.lines[child] = line
            result[key] = self.build(value_node, child)
        return result


def load_yaml(path: Path) -> YamlDocument:
    """Read `path` into a YamlDocument; any read or syntax problem becomes a UserError."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserError(f"file not found: {path}", hint="check the path") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"cannot read {path}: {exc}") from None
    return parse_yaml(text, path)


def parse_yaml(text: str, path: Path) -> YamlDocument:
    """Parse YAML text that came from `path` (used for messages only)."""
    doc = YamlDocument(path=path, data=None)
    loader = yaml.SafeLoader(text)
    try:
        root = loader.get_single_node()
        if root is not None:
            doc.data = _Builder(doc, loader).build(root, ())
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        line = mark.line + 1 if mark is not None else None
        raise UserError(
            f"invalid YAML: {exc.problem}",
            where=location(str(path), line=line),
            hint="check indentation and quoting; values with ': ' or '#' need quotes",
        ) from None
    except yaml.YAMLError as exc:
        raise UserError(f"invalid YAML: {exc}", where=str(path)) from None
    finally:
        loader.dispose()
    return doc
