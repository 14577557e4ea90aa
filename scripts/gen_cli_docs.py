"""Generate docs/cli.md from the CLI's own --help output (tests/test_cli_docs.py checks for drift).

    python scripts/gen_cli_docs.py          # rewrite docs/cli.md
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

ROOT = Path(__file__).resolve().parents[1]
TARGET = ROOT / "docs" / "cli.md"


def _walk(command: click.Command, path: list[str], parent: click.Context | None = None):
    # Contexts chain like a real invocation, so subcommands inherit help_option_names (-h).
    ctx = click.Context(command, info_name=" ".join(path), parent=parent, terminal_width=100,
                        max_content_width=100, **command.context_settings)
    yield path, command, ctx
    if isinstance(command, click.Group):
        for name in sorted(command.commands):
            yield from _walk(command.commands[name], [*path, name], ctx)


def render() -> str:
    from otapub.cli import main

    parts = ["# otapub command reference\n",
             "Generated from the CLI's own help by `python scripts/gen_cli_docs.py`; do not edit by hand.\n"]
    for path, command, ctx in _walk(main, ["otapub"]):
        parts.append(f"## `{' '.join(path)}`\n\n```text\n{command.get_help(ctx)}\n```\n")
    return "\n".join(parts)


if __name__ == "__main__":
    TARGET.parent.mkdir(exist_ok=True)
    TARGET.write_text(render())
    print(f"wrote {TARGET.relative_to(ROOT)}", file=sys.stderr)
