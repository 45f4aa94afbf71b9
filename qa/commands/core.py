"""Settings, database and ingest commands."""

from __future__ import annotations

import sys
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

import click

from ..domain import CHANNEL_LAYOUTS
from .common import EXIT_PARTIAL, App, domain_errors, echo_table, pass_app

if TYPE_CHECKING:
    from ..ingest.register import IngestOutcome


@click.group("config")
def config_group() -> None:
    """Show the effective settings (and the local day)."""


@config_group.command("show")
@pass_app
@domain_errors
def config_show(app: App) -> None:
    """Print every setting, its value and where it came from (default, qa.toml, QA_* variable)."""
    from .. import storage as db

    loaded = app.loaded
    values = asdict(loaded.settings)
    values["database_url"] = db.redact_url(loaded.settings.effective_database_url)
    for secret in ("secret_key", "customer_ref_key"):
        values[secret] = "***" if getattr(loaded.settings, secret) else ""
    rows = [(name, value, loaded.sources[name]) for name, value in values.items()]
    echo_table(rows, ("setting", "value", "source"))
    click.echo(f"\nconfig file: {loaded.config_file or '(none; defaults and environment only)'}")


@config_group.command("day")
@click.option("--days-ago", type=click.IntRange(0, 3650), default=0, show_default=True)
@pass_app
@domain_errors
def config_day(app: App, days_ago: int) -> None:
    """Print the day (YYYY-MM-DD) DAYS_AGO days before today on the call centre's clock (the
    timezone setting), e.g. for naming last night's recordings folder in a cron script."""
    from datetime import timedelta

    from ..timeutil import local_today

    click.echo((local_today(app.settings.tz) - timedelta(days=days_ago)).isoformat())


@click.group("db")
def db_group() -> None:
    """Database schema (Alembic migrations)."""


@db_group.command("upgrade")
@click.option("--revision", default="head", show_default=True)
@pass_app
@domain_errors
def db_upgrade(app: App, revision: str) -> None:
    """Create or migrate the schema of the configured database."""
    from .. import storage as db

    url = app.settings.effective_database_url
    db.upgrade(url, revision)
    engine = db.make_engine(url)
    click.echo(f"{db.redact_url(url)}: schema at revision {db.current_revision(engine)}")
    engine.dispose()


@db_group.command("current")
@pass_app
@domain_errors
def db_current(app: App) -> None:
    """Print the schema revision of the configured database."""
    from .. import storage as db

    url = app.settings.effective_database_url
    engine = db.make_engine(url)
    click.echo(f"{db.redact_url(url)}: revision {db.current_revision(engine) or '(none: run qa db upgrade)'}")
    engine.dispose()


def _print_outcome(o: IngestOutcome) -> None:
    if o.outcome == "registered":
        click.echo(f"  + {o.call_id}  {o.detail}")
    elif o.outcome == "failed":
        click.echo(f"  ! {o.call_id}  [{o.error_code}] {o.detail}", err=True)
    elif o.outcome == "conflict":
        click.echo(f"  ≠ {o.call_id}  conflict: {o.detail}", err=True)


@click.command("ingest")
@click.argument("folder", required=False, type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--manifest", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="CSV or JSONL with call_id,file,agent_id,team,started_at,direction,business_line[,channel_layout].")
@click.option("--channel-layout", type=click.Choice(CHANNEL_LAYOUTS),
              help="Layout for files without one (default: the channel_layout setting).")
@click.option("--quiet", "-q", is_flag=True, help="Only the summary line.")
@pass_app
@domain_errors
def ingest_cmd(app: App, folder: Path | None, manifest: Path | None, channel_layout: str | None, quiet: bool) -> None:
    """Register recordings from FOLDER (recursive) or a --manifest. Same bytes are never
    registered twice; bad files are recorded as failed calls with the reason.

    Exit status: 0 all registered or already known, 2 some files failed or conflicted."""
    from ..ingest.register import IngestOptions, find_recordings, ingest
    from ..storage import write_session

    if (folder is None) == (manifest is None):
        raise click.UsageError("give either FOLDER or --manifest FILE")
    settings = app.settings
    layout = channel_layout or settings.channel_layout
    recordings = find_recordings(folder=folder, manifest=manifest, channel_layout=layout, zone=settings.tz,
                                 customer_key=settings.customer_key)
    options = IngestOptions(default_channel_layout=layout, max_duration_s=settings.max_duration_s)
    with write_session(app.session_factory) as session:
        report = ingest(session, recordings, options, progress=None if quiet else _print_outcome)
    click.echo(f"ingest: {len(report.registered)} registered, {len(report.duplicates)} already known, "
               f"{len(report.failed)} failed, {len(report.conflicts)} conflicts "
               f"(of {len(report.outcomes)} recordings)")
    if not report.ok:
        sys.exit(EXIT_PARTIAL)


def register(group: click.Group) -> None:
    group.add_command(config_group)
    group.add_command(db_group)
    group.add_command(ingest_cmd)
