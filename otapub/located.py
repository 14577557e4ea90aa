"""Values read from a fleet file that remember where they stand (file:line:column).

The YAML readers (otapub.yamlsource with libyaml, otapub.fastyaml for plain device lists) make
them; the model (otapub.model) and the validation (otapub.fleet) report problems at them.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from otapub.errors import Problem


class Pos(NamedTuple):
    """file:line:column of a key or value (a named tuple: cheaper to make than a frozen dataclass)."""

    file: str
    line: int
    column: int

    def problem(self, field: str, message: str) -> Problem:
        return Problem(self.file, self.line, self.column, field, message)


class Map(dict):
    """A mapping that remembers where it, its keys and its values stand.

    Positions are kept as 1-based ``(line, column)`` pairs and made into a Pos only when asked
    for: a 100,000-device fleet has close to a million of them and reports almost none.
    """

    __slots__ = ("file", "line_column", "key_pos", "value_pos")

    @classmethod
    def empty(cls, pos: Pos) -> Map:
        """An empty mapping standing at ``pos`` (for a key written without a value)."""
        data = cls()
        data.file, data.line_column, data.key_pos, data.value_pos = pos.file, (pos.line, pos.column), {}, {}
        return data

    @property
    def pos(self) -> Pos:
        return Pos(self.file, *self.line_column)

    def where(self, key: Any) -> Pos:
        """Where the value of ``key`` stands (the mapping itself when the key is absent)."""
        found = self.value_pos.get(key)
        return Pos(self.file, *found) if found else self.pos

    def key_where(self, key: Any) -> Pos:
        return Pos(self.file, *self.key_pos[key])


class Seq(list):
    __slots__ = ("pos", "item_pos")  # Pos objects: sequences are few (hardware lists, group members)
