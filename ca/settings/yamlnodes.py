"""Reading YAML while keeping line numbers, for ca.yaml.

``yaml.compose`` gives nodes with ``start_mark.line``; this module turns them into plain values
one key at a time so that every problem is reported as ``FILE:LINE: problem`` (1-based lines).
Aliases and anchors are refused (they could make a node its own child). Unknown keys are errors
with a did-you-mean suggestion. Nothing but :class:`SettingsError` leaves this module.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Sequence
from dataclasses import dataclass

import yaml
from yaml.events import AliasEvent
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from config.errors import CmcgateError

_NULL_TAG = "tag:yaml.org,2002:null"
_BOOL_TAG = "tag:yaml.org,2002:bool"
_INT_RE = re.compile(r"^[+-]?[0-9]+$")
_TRUE = {"true", "yes", "on"}
_FALSE = {"false", "no", "off"}


class SettingsError(CmcgateError):
    """A problem in a settings file, located as ``FILE:LINE: problem``."""

    def __init__(self, path: str, line: int | None, problem: str) -> None:
        where = f"{path}:{line}" if line is not None else path
        super().__init__(f"{where}: {problem}")
        self.path = path
        self.line = line
        self.problem = problem


class _NoAliasLoader(yaml.SafeLoader):
    """A SafeLoader whose composer refuses aliases (``*name``)."""

    def compose_node(self, parent: Node | None, index: int) -> Node | None:  # type: ignore[override]
        if self.check_event(AliasEvent):
            event = self.peek_event()
            raise yaml.composer.ComposerError(
                None, None, "aliases (*name) are not supported in ca.yaml", event.start_mark
            )
        return super().compose_node(parent, index)  # type: ignore[no-any-return]


def compose(text: str, path: str) -> Node | None:
    """The document's root node (None for an empty document)."""
    loader: _NoAliasLoader | None = None
    try:
        loader = _NoAliasLoader(text)
        return loader.get_single_node()
    except yaml.MarkedYAMLError as ex:
        mark = ex.problem_mark or ex.context_mark
        line = mark.line + 1 if mark is not None else None
        problem = " ".join(p for p in (ex.context, ex.problem) if p) or "invalid YAML"
        raise SettingsError(path, line, f"invalid YAML: {problem}") from None
    except yaml.reader.ReaderError as ex:
        line = text.count("\n", 0, ex.position) + 1 if isinstance(ex.position, int) else None
        raise SettingsError(
            path, line, f"invalid YAML: {ex.reason} (#x{ex.character:04x})"
        ) from None
    except yaml.YAMLError as ex:
        raise SettingsError(path, None, f"invalid YAML: {ex}") from None
    except RecursionError:
        raise SettingsError(path, None, "invalid YAML: nested too deeply") from None
    finally:
        if loader is not None:
            loader.dispose()


def line_of(node: Node) -> int:
    return int(node.start_mark.line) + 1


@dataclass(frozen=True)
class Field:
    key_node: ScalarNode
    value: Node

    @property
    def line(self) -> int:
        return line_of(self.value)


class Section:
    """One YAML mapping: its known keys, checked against the allowed ones.

    ``where`` is its dotted name in messages; "" for the document's top level.
    """

    def __init__(
        self,
        path: str,
        node: Node,
        where: str,
        allowed: Sequence[str],
        line: int | None = None,
    ) -> None:
        self.path = path
        self.where = where
        self.line = line if line is not None else line_of(node)
        where = where or "top level"
        if not isinstance(node, MappingNode):
            raise SettingsError(path, line_of(node), f"{where} must be a mapping of key: value")
        self.fields: dict[str, Field] = {}
        for key_node, value in node.value:
            if not isinstance(key_node, ScalarNode) or not key_node.value.strip():
                raise SettingsError(path, line_of(key_node), f"{where}: keys must be plain names")
            key = str(key_node.value)
            if key in self.fields:
                first = line_of(self.fields[key].key_node)
                raise SettingsError(
                    path,
                    line_of(key_node),
                    f"{where}: duplicate key {key!r} (first on line {first})",
                )
            if allowed and key not in allowed:
                raise SettingsError(path, line_of(key_node), unknown_key(key, where, allowed))
            self.fields[key] = Field(key_node, value)

    def error(self, key: str | None, problem: str) -> SettingsError:
        """An error on ``key``'s value line, or on the section's line when key is missing."""
        field = self.fields.get(key) if key else None
        return SettingsError(self.path, field.line if field else self.line, problem)

    def has(self, key: str) -> bool:
        f = self.fields.get(key)
        return f is not None and not _is_null(f.value)

    def node(self, key: str, *, required: bool = False) -> Node | None:
        f = self.fields.get(key)
        if f is None or _is_null(f.value):
            if required:
                raise self.error(None, f"{self.where or 'top level'}: missing required key {key!r}")
            return None
        return f.value

    def section(
        self, key: str, allowed: Sequence[str], *, required: bool = False
    ) -> Section | None:
        node = self.node(key, required=required)
        if node is None:
            return None
        key_line = line_of(self.fields[key].key_node)
        return Section(self.path, node, self.child(key), allowed, key_line)

    def child(self, key: str) -> str:
        """The dotted name of a key in this section (``ca.keys.backend``)."""
        return f"{self.where}.{key}" if self.where else key

    def text(self, key: str, *, required: bool = False, default: str | None = None) -> str | None:
        node = self.node(key, required=required)
        if node is None:
            return default
        if not isinstance(node, ScalarNode):
            raise self.error(key, f"{self.child(key)} must be a single value, not a list/map")
        value = str(node.value).strip()
        if not value:
            if required:
                raise self.error(key, f"{self.child(key)} must not be empty")
            return default
        return value

    def req_text(self, key: str) -> str:
        value = self.text(key, required=True)
        assert value is not None  # noqa: S101 - required=True never returns None
        return value

    def integer(self, key: str, default: int, low: int, high: int) -> int:
        node = self.node(key)
        if node is None:
            return default
        raw = str(node.value).strip() if isinstance(node, ScalarNode) else ""
        if not _INT_RE.match(raw):
            raise self.error(key, f"{self.child(key)} must be a whole number")
        value = int(raw)
        if not low <= value <= high:
            raise self.error(key, f"{self.child(key)} must be between {low} and {high}")
        return value

    def boolean(self, key: str, default: bool) -> bool:
        node = self.node(key)
        if node is None:
            return default
        raw = str(node.value).strip().lower() if isinstance(node, ScalarNode) else ""
        if raw in _TRUE:
            return True
        if raw in _FALSE:
            return False
        raise self.error(key, f"{self.child(key)} must be true or false")

    def text_list(self, key: str, *, required: bool = False) -> list[tuple[str, int]]:
        """A list of scalars as (value, line); a single scalar counts as a one-item list."""
        node = self.node(key, required=required)
        if node is None:
            return []
        if isinstance(node, ScalarNode):
            return [(str(node.value).strip(), line_of(node))]
        if not isinstance(node, SequenceNode):
            raise self.error(key, f"{self.child(key)} must be a list")
        out = []
        for item in node.value:
            if not isinstance(item, ScalarNode) or not str(item.value).strip():
                raise SettingsError(
                    self.path, line_of(item), f"{self.child(key)}: items must be single values"
                )
            out.append((str(item.value).strip(), line_of(item)))
        if required and not out:
            raise self.error(key, f"{self.child(key)} must not be empty")
        return out

    def items(self, key: str) -> list[Node]:
        node = self.node(key)
        if node is None:
            return []
        if not isinstance(node, SequenceNode):
            raise self.error(key, f"{self.child(key)} must be a list")
        return list(node.value)


def unknown_key(key: str, where: str, allowed: Sequence[str]) -> str:
    close = difflib.get_close_matches(key, list(allowed), n=1, cutoff=0.6)
    hint = f" (did you mean {close[0]!r}?)" if close else f" (known keys: {', '.join(allowed)})"
    return f"{where}: unknown key {key!r}{hint}"


def _is_null(node: Node) -> bool:
    return isinstance(node, ScalarNode) and node.tag == _NULL_TAG


def is_bool_scalar(node: Node) -> bool:
    return isinstance(node, ScalarNode) and node.tag == _BOOL_TAG
