"""A fast reader for the plain block YAML that fleet files are written in; libyaml reads the rest.

A 100,000-device fleet is 400,000 lines of ``key: value``. libyaml with PyYAML's node and
constructor objects takes 1.6 s for them; this reader 0.5 s, because it makes nothing but the
result (yamlsource's ``Map`` with the same values and the same line:column
positions). It accepts a strict subset of YAML and returns None for anything else, so the
caller falls back to libyaml, which then also reports any error. tests/test_fastyaml.py checks
on generated documents that whatever this reader accepts, libyaml reads the same way.

The subset, line by line (UTF-8 text, ``\\n`` line ends):

- blank lines and comment lines;
- ``key:`` opening a mapping indented further on the next line;
- ``key: value``, optionally followed by `` # comment``;
- a key is a plain word (``[A-Za-z_][A-Za-z0-9_.+/-]*``), a MAC address (``AA:BB:..`` or
  ``aa-bb-..``) or a quoted string, of at most 1,000 characters;
- a value is a quoted string without escapes, a decimal integer (no sign, no leading zero, up
  to 18 digits), or a plain string that starts with an ASCII letter or ``_`` (words separated
  by single spaces, no ``:`` or ``#``) and is not one of YAML 1.1's boolean or null words;
- beyond ASCII, printable characters in comments, quoted strings and plain strings.

Not accepted (libyaml reads them): sequences, flow collections, anchors, aliases, tags, block
scalars, multi-line scalars, document markers, tabs, empty values, duplicate keys.
"""

from __future__ import annotations

import functools
import re

from otapub.located import Map

_MAC = r"[0-9A-Fa-f]{2}(?:[:-][0-9A-Fa-f]{2}){5}"  # unquoted: a string (yamlsource drops base-60 ints)
# Printable characters beyond ASCII, less those YAML reads as line breaks (U+2028, U+2029) and
# the byte order mark; C1 controls (U+0080-U+009F, with U+0085, another line break) are below.
_WIDE = "\u00a0-\u2027\u202a-\ud7ff\ue000-\ufefe\uff00-\ufffd\U00010000-\U0010ffff"


def _line_pattern(wide: str) -> re.Pattern:
    """One line of the subset; ``wide``: the characters beyond ASCII it may hold."""
    dq = rf'"[ !#-\[\]-~{wide}]*"'  # double-quoted, printable, without " and \ (so no escapes)
    sq = rf"'[ -&(-~{wide}]*'"  # single-quoted, printable, without ' (so no '' escapes)
    plain = rf"A-Za-z0-9_.+/(){wide}-"  # the characters of a plain string
    return re.compile(
        rf"""^(?P<indent>[ ]*)
        (?:(?P<key>[A-Za-z_][A-Za-z0-9_.+/-]*|{_MAC}|{dq}|{sq}):
           (?:(?P<gap>[ ]+)(?P<value>{dq}|{sq}|0|[1-9][0-9]{{0,17}}|[A-Za-z_][{plain}]*(?:[ ][{plain}]+)*))?
           [ ]*)?
        (?:(?<![^ \n])\#[ -~{wide}]*)?  # a comment: at the start of the line or after a space
        $""",
        re.VERBOSE | re.MULTILINE,
    )


_ASCII_LINE = _line_pattern("")


@functools.cache
def _wide_line() -> re.Pattern:
    """The pattern for text beyond ASCII: compiling its classes takes 15 ms, so only when needed."""
    return _line_pattern(_WIDE)


_LONGEST_KEY = 1000  # libyaml refuses a key of over 1,024 characters (an implicit key's limit in YAML)
# Plain scalars YAML 1.1 reads as booleans or null (PyYAML's implicit resolvers).
_NOT_STRINGS = frozenset(
    "yes Yes YES no No NO true True TRUE false False FALSE on On ON off Off OFF null Null NULL".split()
)


def fast_load(data: str | bytes, file: str) -> Map | None:
    """The document as yamlsource.load_yaml would read it, or None when it is outside the subset."""
    if isinstance(data, bytes):
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            return None
    else:
        text = data
    if "\r" in text:
        return None
    pattern = _ASCII_LINE if text.isascii() else _wide_line()
    lines = pattern.findall(text)  # (indent, key, gap, value) per line that is in the subset
    if len(lines) != text.count("\n") + 1:
        return None  # some line is not
    root: Map | None = None
    stack: list[tuple[int, Map]] = []  # the open mappings, outermost first, with their indent
    pending: str | int | None = None  # a `key:` of `current` whose mapping starts on a later line
    # The innermost open mapping and its indent, in locals: most lines are one more key of it.
    current, indent_now, keys, values = Map(), -1, {}, {}
    for number, (indent_text, key_text, gap, value_text) in enumerate(lines, 1):
        if not key_text:
            continue  # blank or comment
        indent = len(indent_text)
        if indent != indent_now or pending is not None:
            if pending is not None:
                if indent <= indent_now:
                    return None  # `key:` with no value (null): libyaml reads it
                child = Map()
                child.file, child.line_column, child.key_pos, child.value_pos = file, (number, indent + 1), {}, {}
                current[pending] = child
                values[pending] = (number, indent + 1)
                stack.append((indent, child))
                pending = None
            elif root is None:
                root = Map()
                root.file, root.line_column, root.key_pos, root.value_pos = file, (number, indent + 1), {}, {}
                stack.append((indent, root))
            else:
                while stack and indent < stack[-1][0]:
                    stack.pop()
                if not stack or indent != stack[-1][0]:
                    return None  # between two levels, or left of the top-level keys
            indent_now, current = stack[-1]
            keys, values = current.key_pos, current.value_pos
        if len(key_text) > _LONGEST_KEY:
            return None
        if key_text[0] == '"' or key_text[0] == "'":
            key = key_text[1:-1]
        elif key_text in _NOT_STRINGS:
            return None
        else:
            key = key_text
        if key in keys:
            return None
        keys[key] = (number, indent + 1)
        if not value_text:
            pending = key
            continue
        first = value_text[0]
        if first == '"' or first == "'":
            current[key] = value_text[1:-1]
        elif first.isdigit():
            current[key] = int(value_text)
        elif value_text in _NOT_STRINGS:
            return None
        else:
            current[key] = value_text
        values[key] = (number, indent + len(key_text) + len(gap) + 2)
    if pending is not None:
        return None
    return root
