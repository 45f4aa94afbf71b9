"""``qa purge``: erase the personal data of calls past their retention period, of a period,
or of named calls (an erasure request)."""

from __future__ import annotations

import click

from .common import EXIT_PARTIAL, App, authenticate, credential, domain_errors, echo_table, pass_app


def purge_options(settings, before: str | None, call_ids: tuple[str, ...], delete_audio: bool, reason: str):
    from ..retention import PurgeOptions
    from ..timeutil import parse_when

    try:
        options = PurgeOptions(policy=settings.retention_policy(), before=parse_when(before, settings.tz)
                               if before else None, call_ids=call_ids, delete_audio=delete_audio, reason=reason)
        options.validate()
    except ValueError as e:
        raise click.UsageError(str(e)) from e
    return options


def print_plan(app: App, plan) -> None:
    rows = [(c.call_id, c.business_line or "-", app.clock(c.started_at) or "-",
             ", ".join(f"{k}={v}" for k, v in c.why.items()), c.refused or "due") for c in plan.candidates]
    if rows:
        echo_table(rows, ("call", "business line", f"started ({app.settings.timezone})", "why", "status"))
    click.echo(f"{len(plan.due)} calls due, {len(plan.refused)} refused (open review or appeal)")


def apply_purge(app: App, options, actor) -> int:
    """Purge as ``actor`` (an :class:`~qa.permissions.Actor`) and print what was done; the
    exit status (2 when calls were refused)."""
    from ..retention import purge

    def progress(done) -> None:
        click.echo(f"purged {done.call_id}: {done.utterances} utterances erased, audio {done.audio}")

    report = purge(app.session_factory, app.settings, options, actor=actor, progress=progress)
    for c in report.refused:
        click.echo(f"refused {c.call_id}: {c.refused}", err=True)
    click.echo(f"purge: {len(report.purged)} calls purged ({report.audio_deleted} recordings deleted), "
               f"{len(report.refused)} refused")
    return EXIT_PARTIAL if report.refused else 0


@click.command("purge")
@click.option("--dry-run", "mode", flag_value="dry-run", help="List what would be purged and why (the default).")
@click.option("--apply", "mode", flag_value="apply", help="Purge.")
@click.option("--before", metavar="DAY", help="Calls started before this day (local) or time, whatever the policy.")
@click.option("--call", "call_ids", multiple=True, metavar="ID", help="These calls, whatever their age (repeatable).")
@click.option("--delete-audio", is_flag=True, help="Delete the recording files too (when still the same bytes).")
@click.option("--reason", default="", help="Recorded with each purge, e.g. an erasure request's reference.")
@click.option("--as", "actor_name", envvar="QA_USER", metavar="USER",
              help="The admin who purges (needed with --apply; authenticated, recorded in the audit log).")
@click.option("--password-stdin", is_flag=True, help="Read USER's password from stdin (else a prompt or QA_OPERATOR_TOKEN).")
@pass_app
@domain_errors
def purge_cmd(app: App, mode: str | None, before: str | None, call_ids: tuple[str, ...], delete_audio: bool,
              reason: str, actor_name: str | None, password_stdin: bool) -> None:
    """Erase the personal data of calls past their business line's retention period (the
    retention_days setting), of calls started --before a day, or of --call IDs: transcripts,
    speech features, classifier scores, the words quoted in findings, people's comments and
    (with --delete-audio) the recordings. Findings, scores and verdicts stay for statistics; a
    tombstone and an audit event record each purge. Calls with an open review or appeal are
    refused (exit status 2) until closed."""
    options = purge_options(app.settings, before, call_ids, delete_audio, reason)
    if mode != "apply":
        from ..retention import plan_purge

        with app.session_factory() as session:
            print_plan(app, plan_purge(session, options))
        click.echo("dry run: nothing changed (purge with --apply)")
        return
    if not actor_name:
        raise click.UsageError("--apply needs --as USER (an admin)")
    from ..permissions import Actor
    from ..storage import write_session

    password = credential(app, actor_name, password_stdin)
    with write_session(app.session_factory) as session:
        user = authenticate(app, session, actor_name, password)
        session.commit()
    raise SystemExit(apply_purge(app, options, Actor(user.username, user.role)))


def register(group: click.Group) -> None:
    group.add_command(purge_cmd)
