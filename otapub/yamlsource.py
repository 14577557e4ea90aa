"""Read fleet YAML files, keeping the file:line:column of every key and value.

Uses PyYAML's C parser when present. Two YAML 1.1 traps are closed: MAC addresses such as
``11:22:33:44:55:66`` are not read as base-60 integers, and duplicate keys in one mapping
are an error instead of a silent overwrite.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml
from yaml.constructor import ConstructorError, SafeConstructor
from yaml.nodes import ScalarNode
from yaml.resolver import Resolver

from otapub.errors import Problem
from otapub.fastyaml import fast_load
from otapub.located import Map, Pos, Seq

try:
    from yaml.cyaml import CParser as _Parser

    C_LOADER = True
except ImportError:  # pragma: no cover - depends on how PyYAML was built
    from yaml.composer import Composer
    from yaml.parser import Parser
    from yaml.reader import Reader
    from yaml.scanner import Scanner

    class _Parser(Reader, Scanner, Parser, Composer):  # type: ignore[no-redef]
        def __init__(self, stream: Any):
            Reader.__init__(self, stream)
            Scanner.__init__(self)
            Parser.__init__(self)
            Composer.__init__(self)

    C_LOADER = False


class _Resolver(Resolver):
    def resolve(self, kind: type, value: Any, implicit: Any) -> str:
        """Resolver.resolve for a scalar, minus its per-call list building.

        libyaml's composer calls this from Python for every scalar. Quoted scalars (not plain
        implicit) are always strings; plain ones are matched against the implicit resolvers
        for their first character. (No path or wildcard resolvers are registered here.)
        """
        if kind is not ScalarNode:
            return super().resolve(kind, value, implicit)
        if implicit[0]:
            for tag, regexp in self.yaml_implicit_resolvers.get(value[:1], ()):
                if regexp.match(value):
                    return tag
        return self.DEFAULT_SCALAR_TAG


# YAML 1.1 reads 11:22:33:44:55:66 as a base-60 integer; drop the sexagesimal forms.
_Resolver.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag not in (
        "tag:yaml.org,2002:int", "tag:yaml.org,2002:float")]
    for first, resolvers in Resolver.yaml_implicit_resolvers.items()
}
_Resolver.add_implicit_resolver(
    "tag:yaml.org,2002:int",
    re.compile(r"^(?:[-+]?0b[0-1_]+|[-+]?0[0-7_]+|[-+]?(?:0|[1-9][0-9_]*)|[-+]?0x[0-9a-fA-F_]+)$"),
    list("-+0123456789"),
)
_Resolver.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+][0-9]+)?|\.[0-9][0-9_]*(?:[eE][-+][0-9]+)?"
        r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"
    ),
    list("-+0123456789."),
)


_STR = "tag:yaml.org,2002:str"


def _line_column(node: yaml.Node) -> tuple[int, int]:
    return node.start_mark.line + 1, node.start_mark.column + 1


class _Constructor(SafeConstructor):
    file = "<yaml>"

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        # A scalar its tag cannot hold (`2026-13-01`, `!!int x`, an integer of 5,000 digits) makes
        # PyYAML's constructors raise ValueError: report it where it stands, as YAML errors are.
        try:
            return super().construct_object(node, deep=deep)
        except (ValueError, OverflowError) as exc:
            what = f"{node.value!r} " if isinstance(node.value, str) else ""
            raise ConstructorError(None, None, f"{what}is not a valid {node.tag.rpartition(':')[2]} ({exc})",
                                   node.start_mark) from None

    def _construct(self, node: yaml.Node) -> Any:
        # Most keys and values are strings: take them from the node, which is what construct_object
        # returns for them after a cache lookup and three more calls.
        if node.tag == _STR and type(node) is ScalarNode:
            return node.value
        return self.construct_object(node, deep=True)

    def construct_yaml_map(self, node: yaml.MappingNode):
        data = Map()
        data.file = self.file
        data.line_column = _line_column(node)
        data.key_pos = key_pos = {}
        data.value_pos = value_pos = {}
        yield data
        self.flatten_mapping(node)
        for key_node, value_node in node.value:
            key = self._construct(key_node)
            if not isinstance(key, (str, int, float, bool)) and key is not None:
                raise ConstructorError(None, None, "a mapping key must be a plain value", key_node.start_mark)
            if key in data:
                raise ConstructorError(
                    None, None, f"duplicate key {key!r} (first at line {key_pos[key][0]})", key_node.start_mark
                )
            data[key] = self._construct(value_node)
            key_pos[key] = _line_column(key_node)
            value_pos[key] = _line_column(value_node)

    def construct_yaml_seq(self, node: yaml.SequenceNode):
        data = Seq()
        data.pos = Pos(self.file, *_line_column(node))
        data.item_pos = [Pos(self.file, *_line_column(item)) for item in node.value]
        yield data
        data.extend(self.construct_sequence(node, deep=True))


_Constructor.add_constructor("tag:yaml.org,2002:map", _Constructor.construct_yaml_map)
_Constructor.add_constructor("tag:yaml.org,2002:seq", _Constructor.construct_yaml_seq)


class _Loader(_Parser, _Constructor, _Resolver):
    def __init__(self, stream: Any, file: str):
        _Parser.__init__(self, stream)
        _Constructor.__init__(self)
        _Resolver.__init__(self)
        self.file = file


def load_yaml(text: str | bytes, file: str) -> Any:
    """Parse one YAML document; raise YAMLProblem (a Problem) on syntax errors.

    Plain ``key: value`` files, which is what large device lists are, are read by
    otapub.fastyaml (the same result in a third of the time); anything else, and every error,
    by libyaml.
    """
    found = fast_load(text, file)
    return found if found is not None else libyaml_load(text, file)


def libyaml_load(text: str | bytes, file: str) -> Any:
    """load_yaml without the fast reader."""
    loader = _Loader(text, file)
    try:
        return loader.get_single_data()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        message = " ".join(p for p in (exc.context, exc.problem) if p)
        raise YAMLProblem(
            Problem(file, mark.line + 1 if mark else None, mark.column + 1 if mark else None, "",
                    f"invalid YAML: {message}")
        ) from None
    except yaml.reader.ReaderError as exc:  # a character YAML does not allow, or bytes that are not UTF-8
        newline = "\n" if isinstance(text, str) else b"\n"
        before = text[: exc.position]
        line, column = before.count(newline) + 1, exc.position - before.rfind(newline)
        code = exc.character if isinstance(exc.character, int) else ord(exc.character)
        kind = "character" if isinstance(text, str) else "byte"
        raise YAMLProblem(Problem(file, line, column, "", f"invalid YAML: {exc.reason} ({kind} #x{code:02x})")
                          ) from None
    except yaml.YAMLError as exc:
        raise YAMLProblem(Problem(file, None, None, "", f"invalid YAML: {exc}")) from None
    finally:
        loader.dispose()


def read_source(path: Path, name: str) -> bytes:
    """The bytes of a fleet file; YAMLProblem naming it ``name`` when it cannot be read."""
    try:
        return path.read_bytes()
    except OSError as exc:
        raise YAMLProblem(Problem(name, None, None, "", f"cannot read: {exc.strerror}")) from None


def read_yaml(path: Path, name: str) -> Any:
    """Read and parse one YAML file; problems name it ``name`` (its path relative to the repository)."""
    return load_yaml(read_source(path, name), name)


class YAMLProblem(Exception):
    def __init__(self, problem: Problem):
        super().__init__(str(problem))
        self.problem = problem
