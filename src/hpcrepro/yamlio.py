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


def _construct(node: yaml.Node, path: KeyPath, doc: YamlDocument, loader: yaml.SafeLoader) -> Any:
    if isinstance(node, yaml.MappingNode):
        result: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            key = loader.construct_object(key_node, deep=True)
            if isinstance(key, (list, dict)):
                raise UserError(
                    "mapping keys must be plain names",
                    where=location(str(doc.path), line=key_node.start_mark.line + 1),
                )
            if key in result:
                raise UserError(
                    f"key '{key}' is given twice",
                    where=location(str(doc.path), line=key_node.start_mark.line + 1),
                    hint="remove one of the two; YAML would silently keep only the last",
                )
            child = (*path, str(key))
            doc.lines[child] = key_node.start_mark.line + 1
            result[key] = _construct(value_node, child, doc, loader)
        return result
    if isinstance(node, yaml.SequenceNode):
        items = []
        for index, item_node in enumerate(node.value):
            doc.lines[(*path, index)] = item_node.start_mark.line + 1
            items.append(_construct(item_node, (*path, index), doc, loader))
        return items
    return loader.construct_object(node, deep=True)


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
            doc.data = _construct(root, (), doc, loader)
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
