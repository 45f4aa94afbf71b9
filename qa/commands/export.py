"""``qa export`` (audit files), ``qa export verify MANIFEST`` and ``qa report``."""

from __future__ import annotations

import getpass
import os
import sys
from datetime import datetime
from pathlib import Path

import click

from ..timeutil import parse_when
from .common import EXIT_TAMPERED, App, domain_errors, pass_app

_FORMAT_SUFFIX = {"jsonl": ".jsonl", "csv": ".csv", "xlsx": ".xlsx"}


def when_option(app: App, value: str | None, *, end: bool = False) -> datetime | None:
    """``--since`` / ``--until``: days and times without an offset are on the call centre's
    clock (the ``timezone`` setting)."""
    if not value:
        return None
    try:
        return parse_when(value, app.settings.tz, end=end)
    except ValueError as e:
        raise click.BadParameter(str(e)) from e


def _default_actor() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (containers)
        return os.environ.get("USER") or "unknown"


def _split(values: tuple[str, ...]) -> tuple[str, ...]:
    """Repeated options and comma-separated lists both work: --tier T1 --tier T2, --tier T1,T2."""
    return tuple(v.strip() for value in values for v in value.split(",") if v.strip())


@click.group("export", invoke_without_command=True)
@click.option("--format", "fmt", type=click.Choice(list(_FORMAT_SUFFIX)), help="Output format (default: from --out).")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path),
              help="Output file; the manifest is written beside it as OUT.manifest.json. CSV also writes "
                   "NAME-calls.csv beside NAME.csv (and NAME-transcript.csv).")
@click.option("--since", help="Calls started at or after this day/time (local: the timezone setting).")
@click.option("--until", help="Calls started before this time; a bare day includes that whole day.")
@click.option("--tier", multiple=True, help="T1, T2 or T3 (repeat or comma-separate).")
@click.option("--category", multiple=True, help="Calls with a finding in this category.")
@click.option("--agent", multiple=True, help="Agent id.")
@click.option("--team", multiple=True, help="Team name.")
@click.option("--status", multiple=True, help="Call status (routed, failed ...).")
@click.option("--include-transcript", is_flag=True, help="Add each call's current transcript.")
@click.option("--no-redact", is_flag=True,
              help="Leave ID/card/phone numbers and e-mail in; needs --as a user with role auditor or admin, "
                   "and is recorded in the audit log.")
@click.option("--as", "actor", help="Who is exporting (a username; default: the OS user).")
@click.option("--password-stdin", is_flag=True,
              help="With --no-redact: read the --as user's password from stdin (else a prompt, or QA_OPERATOR_TOKEN).")
@click.option("--chunk-size", default=500, show_default=True, help="Calls read per database round trip.")
@click.pass_context
@pass_app
@domain_errors
def export_group(app: App, ctx: click.Context, fmt: str | None, out: Path | None, since: str | None,
                 until: str | None, tier, category, agent, team, status, include_transcript: bool, no_redact: bool,
                 actor: str | None, password_stdin: bool, chunk_size: int) -> None:
    """Write a compliance audit export of the matching calls, with a manifest.

    \b
    qa export --format jsonl --out audit.jsonl --since 2026-11-01 --until 2026-11-30 --tier T1
    qa export verify audit.jsonl.manifest.json
    """
    if ctx.invoked_subcommand is not None:
        return
    from ..reporting.export import ExportFilters, ExportOptions, export_signed

    if out is None:
        raise click.UsageError("--out is required")
    if fmt is None:
        fmt = next((f for f, suffix in _FORMAT_SUFFIX.items() if out.suffix.lower() == suffix), None)
        if fmt is None:
            raise click.UsageError("cannot tell the format from --out; give --format jsonl|csv|xlsx")
    if no_redact and not actor:
        raise click.UsageError("--no-redact needs --as USER (a user with role auditor or admin)")
    filters = ExportFilters(since=when_option(app, since), until=when_option(app, until, end=True), tiers=_split(tier),
                            categories=_split(category), agents=_split(agent), teams=_split(team),
                            statuses=_split(status))
    options = ExportOptions(format=fmt, include_transcript=include_transcript, redact=not no_redact,
                            chunk_size=chunk_size)
    if no_redact:  # unmasked PII: the --as user must prove who they are
        from ..storage import write_session
        from .common import authenticate, credential

        password = credential(app, actor, password_stdin)
        with write_session(app.session_factory) as session:
            authenticate(app, session, actor, password)
            session.commit()
    result = export_signed(app.session_factory, app.settings, out, filters, options, actor=actor or _default_actor())
    for path in result.files:
        click.echo(f"wrote {path}")
    click.echo(f"manifest {result.manifest}")
    click.echo(f"{result.calls} calls, {result.findings} findings, {'redacted' if result.redacted else 'NOT redacted'}"
               f", {result.elapsed_s:.1f} s")


@export_group.command("verify")
@click.argument("manifest", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--audit", "check_audit", is_flag=True,
              help="Also check that the configured database's audit log recorded this very manifest, in an "
                   "event a signed checkpoint covers.")
@click.option("--public-key", help="The signing key's public half (qa audit pubkey); default: from audit_key_file.")
@pass_app
@domain_errors
def export_verify(app: App, manifest: Path, check_audit: bool, public_key: str | None) -> None:
    """Check MANIFEST's signature and the sha256 of every file it lists. Exit status 3 naming
    each problem when the export was tampered with. Works without a database unless --audit is
    given."""
    from ..reporting.export import find_export_event, verify_manifest

    verifier = public_verifier(app, public_key)
    check = verify_manifest(manifest, verifier)
    for f in check.files:
        click.echo(f"{f.status:8} {f.name}")
    click.echo(f"manifest sha256 {check.manifest_sha256}; signature {check.signature} (key {check.key_id})")
    problems = check.problems
    if check_audit:
        from .. import audit, signing

        with app.session_factory() as session:
            event = find_export_event(session, check)
            chain = audit.verify(session, verifier=verifier,
                                 database=signing.database_id(app.settings.effective_database_url))
        if event is None:
            problems.append(f"{manifest.name} (no export event in the audit log has this manifest's sha256)")
        elif event.seq > chain.anchored_seq:
            problems.append(f"{manifest.name} (its export event, seq {event.seq}, is after the last signed "
                            f"checkpoint, seq {chain.anchored_seq}: it may have been forged)")
        else:
            click.echo(f"audit log: seq {event.seq} {event.action} by {event.actor} at {event.ts:%Y-%m-%d %H:%M:%S},"
                       f" signed in checkpoint at seq {chain.anchored_seq}")
        problems += [p.message for p in chain.problems]
    if problems:
        click.echo(f"verification FAILED: {'; '.join(problems)}", err=True)
        sys.exit(EXIT_TAMPERED)


def public_verifier(app: App, public_key: str | None):
    """The public key to check signatures with: given, or the configured key file's; ``None``
    (said on stderr) where no key was ever made, so nothing can have been signed either."""
    from .. import signing

    if public_key:
        return signing.Verifier.from_hex(public_key)
    signer = signing.load_key(app.settings.audit_key_file)
    if signer is None:
        click.echo(f"note: no signing key at {app.settings.audit_key_file}, so no signature is checked "
                   "(give --public-key to check against a key kept elsewhere)", err=True)
        return None
    return signer.verifier


@click.command("report")
@click.option("--since", required=True, help="First day of the report (local, the timezone setting).")
@click.option("--until", required=True, help="Last day (included) or end time of the report.")
@click.option("--out", required=True, type=click.Path(dir_okay=False, path_type=Path), help="HTML file to write.")
@click.option("--title", default="语音质检报告", show_default=True)
@pass_app
@domain_errors
def report_command(app: App, since: str, until: str, out: Path, title: str) -> None:
    """Write a self-contained HTML report with charts for calls started in [since, until]."""
    from ..reporting.report import ReportOptions, build_report, write_report

    options = ReportOptions(since=when_option(app, since), until=when_option(app, until, end=True), title=title,
                            timezone=app.settings.timezone)
    with app.session_factory() as session:
        report = build_report(session, options, settings=app.settings)
    write_report(report, out)
    click.echo(f"wrote {out} ({report.data.calls_total} calls, {len(report.charts)} charts)")


def register(group: click.Group) -> None:
    group.add_command(export_group)
    group.add_command(report_command)
