"""Jinja2 templates for human-readable output (never for JSON).

A fleet repository may override any built-in template by putting a file of the same name in
its own ``templates/`` folder.
"""

from __future__ import annotations

from typing import Any

import jinja2

from otapub.config import Config


def environment(config: Config) -> jinja2.Environment:
    loader = jinja2.ChoiceLoader([
        jinja2.FileSystemLoader(str(config.root / "templates")),
        jinja2.PackageLoader("otapub", "templates"),
    ])
    # Output is Markdown or plain text, not HTML; keep_trailing_newline for stable diffs.
    return jinja2.Environment(loader=loader, autoescape=False, keep_trailing_newline=True,  # noqa: S701
                              trim_blocks=True, lstrip_blocks=True, undefined=jinja2.StrictUndefined)


def render_template(config: Config, name: str, **context: Any) -> str:
    return environment(config).get_template(name).render(**context)
