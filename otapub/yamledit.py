"""Splice changes into hand-written YAML so that everything not changed stays byte-identical.

A round-trip dump re-renders the whole file (indentation, spacing, and comments that sit
between entries move or vanish when an entry is deleted). Instead, ruamel.yaml's composer
tells where every node starts and ends, and only the lines of the entries that change are
rewritten: the rest of the file is copied through untouched, comments, quoting and all.

Handles what people write for a fleet: block mappings of entries whose fields are scalars.
A flow-style section (``devices: {…}``) is refused with a clear message rather than reflowed.
"""

from __future__ import annotations

import bisect
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError
from ruamel.yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from otapub.errors import OtapubError
from otapub.yamlsource import YAMLProblem, load_yaml

REMOVE = object()  # a field value meaning "delete this field"
_LINE_BREAK = re.compile(r"\r\n|\r|\n")
_PLAIN = re.compile(r"[A-Za-z_/][A-Za-z0-9 _./+@()-]*")
_NULL = "tag:yaml.org,2002:null"


class EditError(OtapubError):
    """The YAML is written in a way otapub cannot edit without reformatting it."""


class Quoted(str):
    """A string always written double-quoted (versions, digests: uniform and never a number)."""


def scalar(value: Any) -> str:
    """A YAML scalar for value: plain when that reads back as the same string, else double-quoted."""
    if isinstance(value, Quoted):
        return json.dumps(str(value), ensure_ascii=False)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if not isinstance(value, str):
        raise TypeError(f"cannot write {type(value).__name__} as a YAML scalar")
    if _PLAIN.fullmatch(value) and value == value.strip():
        try:
            if load_yaml(f"k: {value}\n", "<scalar>") == {"k": value}:
                return value
        except YAMLProblem:
            pass
    # A JSON string is a valid YAML double-quoted scalar.
    return json.dumps(value, ensure_ascii=False)


@dataclass
class _Span:
    start: int
    end: int
    text: str
    order: int


@dataclass
class Entry:
    """One ``key: value`` of a mapping, with where it stands in the text."""

    key: ScalarNode
    value: Node

    @property
    def name(self) -> str:
        return self.key.value


class Document:
    """One YAML file's text, its node tree, and the changes queued against it."""

    def __init__(self, text: str, name: str):
        self.text = text
        self.name = name
        self.newline = "\r\n" if "\r\n" in text else "\n"
        self._starts = [0] + [m.end() for m in _LINE_BREAK.finditer(text)]
        if self._starts[-1] == len(text) and len(self._starts) > 1:
            self._starts.pop()  # the text ends with a line break: no empty last line
        try:
            self.root = YAML(typ="rt").compose(text) if text.strip() else None
        except YAMLError as exc:
            raise EditError(f"{name}: cannot be edited: {exc}") from None
        if self.root is not None and not isinstance(self.root, MappingNode):
            self.root = None if _is_null(self.root) else self._refuse(self.root, "the document")
        if isinstance(self.root, MappingNode) and self.root.flow_style:
            self._refuse(self.root, "the document")
        self.step = self._detect_step()
        self._spans: list[_Span] = []

    # -- positions -----------------------------------------------------------------------
    def _line_of(self, index: int) -> int:
        return bisect.bisect_right(self._starts, index) - 1

    def _line_start(self, line: int) -> int:
        return self._starts[line] if line < len(self._starts) else len(self.text)

    def _line_end(self, line: int) -> int:
        """Index just after the line's break (or the end of the text)."""
        return self._line_start(line + 1)

    def _line(self, line: int) -> str:
        return self.text[self._line_start(line):self._line_end(line)]

    def _is_content(self, line: int) -> bool:
        stripped = self._line(line).strip()
        return bool(stripped) and not stripped.startswith("#")

    def _is_blank(self, line: int) -> bool:
        return 0 <= line < len(self._starts) and not self._line(line).strip()

    def _end_index(self, value: Node, key: Node) -> int:
        """Index just after the last character of value (key: for an empty value)."""
        if isinstance(value, ScalarNode) and value.tag == _NULL and value.value == "":
            return key.end_mark.index
        if isinstance(value, MappingNode) and value.value and not value.flow_style:
            last_key, last_value = value.value[-1]
            return self._end_index(last_value, last_key)
        if isinstance(value, SequenceNode) and value.value and not value.flow_style:
            item = value.value[-1]
            return self._end_index(item, item)
        return value.end_mark.index

    def _last_line(self, entry: Entry) -> int:
        line = self._line_of(max(self._end_index(entry.value, entry.key) - 1, entry.key.start_mark.index))
        first = self._line_of(entry.key.start_mark.index)
        while line > first and not self._is_content(line):  # a block scalar takes trailing blank lines
            line -= 1
        return line

    def _where(self, node: Node) -> str:
        return f"{self.name}:{node.start_mark.line + 1}"

    def _refuse(self, node: Node, what: str) -> None:
        raise EditError(f"{self._where(node)}: {what} is written in flow style ({{…}}) or is not a mapping; "
                        "otapub edits block-style YAML only: rewrite it in block style, one key per line")

    def _detect_step(self) -> int:
        def walk(node: Node) -> int | None:
            if isinstance(node, MappingNode) and not node.flow_style:
                for key, value in node.value:
                    if isinstance(value, MappingNode) and value.value and not value.flow_style:
                        return value.value[0][0].start_mark.column - key.start_mark.column
                    found = walk(value)
                    if found:
                        return found
            return None

        found = walk(self.root) if self.root is not None else None
        return found if found and 0 < found <= 8 else 2

    # -- reading -------------------------------------------------------------------------
    def section(self, name: str) -> Entry | None:
        if self.root is None:
            return None
        for key, value in self.root.value:
            if isinstance(key, ScalarNode) and key.value == name:
                return Entry(key, value)
        return None

    def entries(self, name: str) -> list[Entry]:
        """The entries of a top-level section (``devices``, ``releases``)."""
        section = self.section(name)
        if section is None or _is_null(section.value):
            return []
        if not isinstance(section.value, MappingNode):
            self._refuse(section.value, f"`{name}:`")
        if section.value.flow_style:
            if not section.value.value:
                return []
            self._refuse(section.value, f"`{name}:`")
        return [Entry(k, v) for k, v in section.value.value if isinstance(k, ScalarNode)]

    # -- queued changes ------------------------------------------------------------------
    def _add(self, start: int, end: int, text: str) -> None:
        self._spans.append(_Span(start, end, text, len(self._spans)))

    def _insert_after_line(self, line: int, text: str) -> None:
        at = self._line_end(line)
        prefix = "" if at == 0 or self.text[:at].endswith(("\n", "\r")) else self.newline
        self._add(at, at, prefix + text)

    def update_entry(self, entry: Entry, changes: dict[str, Any], slots: dict[str, str] | None = None) -> None:
        """Set (or with REMOVE, delete) scalar fields of an entry, touching only their lines.

        ``slots`` maps a new field to a field it replaces (``release`` for ``target_version``):
        the new line then takes the old one's place instead of going to the end.
        """
        value = entry.value
        if not (isinstance(value, MappingNode) and not value.flow_style and value.value):
            self._replace_entry(entry, changes)
            return
        pairs = {k.value: (k, v) for k, v in value.value if isinstance(k, ScalarNode)}
        column = value.value[0][0].start_mark.column
        appended = []
        taken: dict[str, str] = {}  # removed field -> new field written in its place
        for name, new in changes.items():
            old_name = (slots or {}).get(name)
            if name not in pairs and new is not REMOVE and old_name in pairs and changes.get(old_name) is REMOVE:
                taken[old_name] = name
        for name, new in changes.items():
            if name in pairs:
                key, old = pairs[name]
                first = self._line_of(key.start_mark.index)
                last = self._last_line(Entry(key, old))
                if new is REMOVE:
                    text = ""
                    if name in taken:
                        line = f"{taken[name]}: {scalar(changes[taken[name]])}"
                        text = " " * column + line + self._rest(old, key, last)
                    self._add(self._line_start(first), self._line_end(last), text)
                elif isinstance(old, ScalarNode) and not _is_null(old) and first == last:
                    self._add(old.start_mark.index, old.end_mark.index, scalar(new))
                else:
                    self._add(self._line_start(first), self._line_end(last),
                              " " * column + f"{name}: {scalar(new)}" + self._rest(old, key, last))
            elif new is not REMOVE and name not in taken.values():
                appended.append(" " * column + f"{name}: {scalar(new)}" + self.newline)
        if appended:
            self._insert_after_line(self._last_line(entry), "".join(appended))

    def update_stage(self, entry: Entry, index: int, changes: dict[str, Any]) -> None:
        """Set scalar fields of item ``index`` of an entry's ``stages:`` list (block or flow mapping)."""
        value = entry.value
        stages = next((v for k, v in value.value if isinstance(k, ScalarNode) and k.value == "stages"), None) \
            if isinstance(value, MappingNode) else None
        if not isinstance(stages, SequenceNode) or index >= len(stages.value) or \
                not isinstance(stages.value[index], MappingNode):
            self._refuse(value, f"the stages of {entry.name!r}")
        item = stages.value[index]
        if item.flow_style:
            fields = {k.value: self.text[v.start_mark.index:v.end_mark.index] for k, v in item.value}
            fields.update({name: scalar(new) for name, new in changes.items()})
            body = ", ".join(f"{k}: {v}" for k, v in fields.items())
            self._add(item.start_mark.index, item.end_mark.index, f"{{{body}}}")
            return
        self.update_entry(Entry(item.value[0][0], item), changes)

    def _rest(self, value: Node, key: Node, line: int) -> str:
        """What follows a value on its last line (a comment), and the line break."""
        end = self._end_index(value, key)
        rest = self.text[end:self._line_end(line)] if self._line_of(end) == line else ""
        body = rest.rstrip("\r\n")
        comment = body if body.strip().startswith("#") else ""
        return comment + self.newline

    def _replace_entry(self, entry: Entry, changes: dict[str, Any]) -> None:
        """Rewrite an entry that is empty or in flow style, keeping the text of fields it keeps."""
        first = self._line_of(entry.key.start_mark.index)
        last = self._last_line(entry)
        indent = self.text[self._line_start(first):entry.key.start_mark.index]
        if indent.strip():
            self._refuse(entry.key, f"entry {entry.name!r}")
        key_text = self.text[entry.key.start_mark.index:entry.key.end_mark.index]
        fields: dict[str, str] = {}
        value = entry.value
        flow = isinstance(value, MappingNode) and value.flow_style
        if isinstance(value, MappingNode):
            for k, v in value.value:
                fields[k.value] = self.text[v.start_mark.index:v.end_mark.index] if not _is_null(v) else "null"
        elif not _is_null(value):
            self._refuse(value, f"entry {entry.name!r}")
        for name, new in changes.items():
            if new is REMOVE:
                fields.pop(name, None)
            else:
                fields[name] = scalar(new)
        rest = self._rest(value, entry.key, last)
        if flow or not fields:
            body = ", ".join(f"{k}: {v}" for k, v in fields.items())
            text = f"{indent}{key_text}: {{{body}}}{rest}"
        else:
            inner = " " * (len(indent) + self.step)
            text = f"{indent}{key_text}:{rest}" + "".join(f"{inner}{k}: {v}{self.newline}" for k, v in fields.items())
        self._add(self._line_start(first), self._line_end(last), text)

    def delete_entry(self, entry: Entry) -> None:
        """Remove an entry's lines; comments above and below it stay where they are."""
        first = self._line_of(entry.key.start_mark.index)
        last = self._last_line(entry)
        start = self._line_start(first)
        if self._is_blank(first - 1) and (self._is_blank(last + 1) or last + 1 >= len(self._starts)):
            start = self._line_start(first - 1)  # do not leave two blank lines behind
        self._add(start, self._line_end(last), "")

    def append_entries(self, section_name: str, entries: Iterable[tuple[str, dict[str, Any]]]) -> None:
        """Add entries (key text, fields) at the end of a top-level section, creating it if needed."""
        entries = list(entries)
        if not entries:
            return
        nl = self.newline
        section = self.section(section_name)
        existing = self.entries(section_name)
        if section is None:
            column = self.root.value[0][0].start_mark.column if self.root is not None and self.root.value else 0
            head = " " * column + f"{section_name}:{nl}"
            body = self._render(entries, column + self.step)
            at = len(self.text)
            prefix = "" if not self.text or self.text.endswith(("\n", "\r")) else nl
            self._add(at, at, prefix + head + body)
            return
        if not existing:
            column = section.key.start_mark.column + self.step
            key_line = self._line_of(section.key.start_mark.index)
            if not (isinstance(section.value, ScalarNode) and section.value.value == ""):  # `~`, `{}`
                start = section.value.start_mark.index
                while start > section.key.end_mark.index + 1 and self.text[start - 1] in " \t":
                    start -= 1
                self._add(start, section.value.end_mark.index, "")
            self._insert_after_line(key_line, self._render(entries, column))
            return
        column = existing[0].key.start_mark.column
        last = self._last_line(existing[-1])
        spaced = len(existing) > 1 and self._blank_before(existing[-1])
        self._insert_after_line(last, self._render(entries, column, spaced))

    def _blank_before(self, entry: Entry) -> bool:
        line = self._line_of(entry.key.start_mark.index) - 1
        while line >= 0 and self._line(line).strip().startswith("#"):
            line -= 1
        return self._is_blank(line)

    def _render(self, entries: list[tuple[str, dict[str, Any]]], column: int, spaced: bool = False) -> str:
        nl = self.newline
        out = []
        for key_text, fields in entries:
            if spaced:
                out.append(nl)
            pad = " " * column
            if not fields:
                out.append(f"{pad}{key_text}: {{}}{nl}")
                continue
            out.append(f"{pad}{key_text}:{nl}")
            inner = " " * (column + self.step)
            out.extend(f"{inner}{k}: {scalar(v)}{nl}" for k, v in fields.items())
        return "".join(out)

    # -- result --------------------------------------------------------------------------
    @property
    def changed(self) -> bool:
        return bool(self._spans)

    def result(self) -> str:
        """The text with every queued change applied."""
        out: list[str] = []
        position = 0
        for span in sorted(self._spans, key=lambda s: (s.start, s.end, s.order)):
            if span.start < position:
                raise AssertionError(f"{self.name}: overlapping edits")  # a bug, not a user mistake
            out.append(self.text[position:span.start])
            out.append(span.text)
            position = span.end
        out.append(self.text[position:])
        return "".join(out)


def _is_null(node: Node) -> bool:
    return isinstance(node, ScalarNode) and node.tag == _NULL

