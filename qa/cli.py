"""The ``qa`` command: a thin layer over the library (see ``qa/commands/``)."""

from __future__ import annotations

import importlib

import click

from . import __version__
from .commands.common import App, setup_logging

# Each module in qa/commands/ adds its commands with ``register(group)``.
COMMAND_MODULES = ("core", "review", "pipeline", "export", "web", "classify", "rules", "asr", "eval", "retention")


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="qa")
@click.option("--config", "config_path", type=click.Path(dir_okay=False), envvar="QA_CONFIG",
              help="Settings file (default: ./qa.toml when present).")
@click.option("--log-level", default="warning", show_default=True,
              type=click.Choice(["debug", "info", "warning", "error"], case_sensitive=False))
@click.option("--log-format", default="auto", show_default=True, type=click.Choice(["auto", "text", "json"]),
              help="auto: JSON lines when stderr is not a terminal.")
@click.pass_context
def cli(ctx: click.Context, config_path: str | None, log_level: str, log_format: str) -> None:
    """Speech quality inspection for financial call centers: ingest recordings, transcribe,
    check rules, score, route to review queues, export audit files."""
    setup_logging(log_level, log_format)
    app = ctx.ensure_object(App)
    app.config_path = config_path
    ctx.call_on_close(app.close)


for _name in COMMAND_MODULES:
    importlib.import_module(f"qa.commands.{_name}").register(cli)


def main() -> None:
    cli(prog_name="qa")
