"""The CLI reference in docs/cli.md is generated from --help and must not drift; every command has help."""


import click

from otapub.cli import main
from tests.conftest import ROOT, load_script


def load_generator():
    return load_script(ROOT / "scripts/gen_cli_docs.py")


def test_docs_cli_md_matches_the_cli():
    expected = load_generator().render()
    actual = (ROOT / "docs/cli.md").read_text()
    assert actual == expected, "docs/cli.md is stale: run `python scripts/gen_cli_docs.py`"


def test_every_command_has_help_text():
    def walk(command, path):
        yield path, command
        if isinstance(command, click.Group):
            for name, sub in command.commands.items():
                yield from walk(sub, f"{path} {name}")

    for path, command in walk(main, "otapub"):
        assert (command.help or "").strip(), f"{path} has no help text"
        for param in command.params:
            if isinstance(param, click.Option) and param.name not in ("help",):
                assert param.help, f"{path} {param.opts[0]} has no help text"
