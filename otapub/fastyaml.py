"""A fast reader for the plain block YAML that fleet files are written in; libyaml reads the rest.

A 100,000-device fleet is 400,000 lines of ``key: value``. libyaml with PyYAML's node and
constructor objects took 1.9 s for them; this reader takes a third of that, because it makes
nothing but the result (yamlsource's ``Map`` with the same values and the same line:column
positions). It accepts a strict subset of YAML and returns None for anything else, so the
caller falls back to libyaml, which then also reports any error. tests/test_fastyaml.py checks
on generated documents that whatever this reader accepts, libyaml reads the same way.

The subset, line by line (UTF-8 text, ``\\n`` line ends):

- blank lines and comment lines;
- ``key:`` opening a mapping indented further on the next line;
- ``key: value``, optionally followed by `` # comment``;
- a key is a plain word (``[A-Za-z_][A-Za-z0-9_.+/-]*``), a MAC address (``AA:BB:..`` or
  ``aa-bb-..``) or a quoted string;
- a value is a quoted string without escapes, a decimal integer (no sign, no leading zero), or
  a plain string that starts with an ASCII letter or ``_`` (words separated by single spaces,
  no ``:`` or ``#``) and is not one of YAML 1.1's boolean or null words;
- beyond ASCII, printable characters in comments, quoted strings and plain strings.

Not accepted (libyaml reads them): sequences, flow collections, anchors, aliases, tags, block
scalars, multi-line scalars, document markers, tabs, empty values, duplicate keys.
"""

from __future__ import annotations

import re

from otapub.yamlsource import Map

_MAC = r"[0-9A-Fa-f]{2}(?:[:-][0-9A-Fa-f]{2}){5}"  # unquoted: a string (yamlsource drops base-60 ints)
# Printable characters beyond ASCII, less those YAML reads as line breaks (U+2028, U+2029) and
# the byte order mark; C1 controls (U+0080-U+009F, with U+0085, another line break) are below.
_WIDE = "\u00a0-\u2027\u202a-\ud7ff\ue000-\ufefe\uff00-\ufffd\U00010000-\U0010ffff"
_DQ = rf'"[ !#-\[\]-~{_WIDE}]*"'  # double-quoted, printable, without " and \ (so no escapes)
_SQ = rf"'[ -&(-~{_WIDE}]*'"  # single-quoted, printable, without ' (so no '' escapes)
_PLAIN = rf"A-Za-z0-9_.+/(){_WIDE}-"  # the characters of a plain string
_LINE = re.compile(
    rf"""^(?P<indent>[ ]*)
    (?:(?P<key>[A-Za-z_][A-Za-z0-9_.+/-]*|{_MAC}|{_DQ}|{_SQ}):
       (?:(?P<gap>[ ]+)(?P<value>{_DQ}|{_SQ}|0|[1-9][0-9]*|[A-Za-z_][{_PLAIN}]*(?:[ ][{_PLAIN}]+)*))?
       [ ]*)?
    (?:(?<![^ \n])\#[ -~{_WIDE}]*)?  # a comment: at the start of the line or after a space
    $""",
    re.VERBOSE | re.MULTILINE,
)
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
    lines = _LINE.findall(text)  # (indent, key, gap, value) per line that is in the subset
    if len(lines) != text.count("\n") + 1:
        return None  # some line is not
    root: Map | None = None
    stack: list[tuple[int, Map]] = []  # the open mappings, innermost last, with their indent
    pending: tuple[Map, str | int] | None = None  # a `key:` whose mapping starts on a later line
    number = 0
    for indent_text, key_text, gap, value_text in lines:
        number += 1
        if not key_text:
            continue  # blank or comment
        indent = len(indent_text)
        if pending is not None:
            if indent <= stack[-1][0]:
                return None  # `key:` with no value (null): libyaml reads it
            parent, parent_key = pending
            current = Map()
            current.file, current.line_column, current.key_pos, current.value_pos = file, (number, indent + 1), {}, {}
            parent[parent_key] = current
            parent.value_pos[parent_key] = (number, indent + 1)
            stack.append((indent, current))
            pending = None
        elif root is None:
            root = Map()
            root.file, root.line_column, root.key_pos, root.value_pos = file, (number, indent + 1), {}, {}
            stack.append((indent, root))
        else:
            while indent < stack[-1][0]:
                stack.pop()
                if not stack:
                    return None  # left of the top-level keys
            if indent != stack[-1][0]:
                return None
        current = stack[-1][1]
        if key_text[0] == '"' or key_text[0] == "'":
            key = key_text[1:-1]
        elif key_text in _NOT_STRINGS:
            return None
        else:
            key = key_text
        if key in current.key_pos:
            return None
        current.key_pos[key] = (number, indent + 1)
        if not value_text:
            pending = (current, key)
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
        current.value_pos[key] = (number, indent + len(key_text) + len(gap) + 2)
    if pending is not None:
        return None
    return root
