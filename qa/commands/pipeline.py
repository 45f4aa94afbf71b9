"""Batch commands: ``qa run``, ``qa nightly``, ``qa runs`` and ``qa demo``, and what the stage
commands (``qa transcribe``, ``qa analyze``, ``qa score``) share with them: the executor
options, running the pipeline and printing its result."""

from __future__ import annotations

import logging
import shutil
import sys
from dataclasses import replace
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from ..config import REPO_ROOT, Settings
from ..timeutil import local_today, parse_day
from .common import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_PARTIAL,
    App,
    JsonLogFormatter,
    domain_errors,
    echo_table,
    pass_app,
    setup_logging,
)

if TYPE_CHECKING:
    from ..pipeline.run import PipelineResult
    from ..pipeline.runs import RunSummary

BUNDLED_MANIFEST = REPO_ROOT / "audio_samples" / "manifest.csv"


def _log_format() -> str:
    handlers = logging.getLogger("qa").handlers
    return "json" if handlers and isinstance(handlers[0].formatter, JsonLogFormatter) else "auto"


def _fmt(value: float, digits: int = 2) -> str:
    return f"{value:.{digits}f}"


def _timing_rows(timings) -> list[tuple]:
    rows = []
    for t in timings:
        util = t.utilisation
        rows.append((t.stage, t.calls, t.failed, _fmt(t.seconds, 1), _fmt(t.calls_per_s, 3),
                     _fmt(t.audio_hours_per_hour, 1), "" if util is None else f"{util:.0%}"))
    return rows


TIMING_HEADERS = ("stage", "calls", "failed", "seconds", "calls/s", "audio-h/h", "decode busy")


def no_classifiers(versions: dict) -> bool:
    """The run (or the results it leaves current) analysed calls without the classifiers."""
    return "rule_pack" in versions and not versions.get("classifiers_sha256")


def print_failures(result: PipelineResult, limit: int = 50) -> None:
    """The calls that failed in this run: id, stage, error code, message."""
    if result.failures:
        echo_table([(f.call_id, f.stage, f.code, f.message[:100]) for f in result.failures[:limit]],
                   ("call", "stage", "error", "message"))
        if len(result.failures) > limit:
            click.echo(f"... and {len(result.failures) - limit} more (qa runs --id {result.run_id})")


def print_result(result: PipelineResult, *, max_failures: int = 20) -> None:
    fig = result.figures
    click.echo(f"\nrun {result.run_id}: {result.status} in {result.seconds:.1f} s "
               f"({fig.calls} calls, {fig.audio_s / 3600:.2f} h of audio)")
    if result.ingest:
        ing = result.ingest
        click.echo(f"ingest: {ing['registered']} new, {ing['duplicates']} already known, {ing['failed']} rejected, "
                   f"{ing['conflicts']} conflicts")
    click.echo("")
    echo_table(_timing_rows(result.timings), TIMING_HEADERS)
    if result.asr_load_s:
        click.echo(f"(ASR model loaded in {result.asr_load_s:.1f} s, overlapped with the first decodes; "
                   "decode busy = share of the transcribe stage's wall time spent in the decode loop)")
    click.echo("")
    status = ", ".join(f"{k} {v}" for k, v in sorted(fig.by_status.items()))
    click.echo(f"calls by status: {status or 'none'}")
    click.echo(f"utterances: {fig.utterances}   findings: {fig.findings}   review items: {fig.review_items} "
               f"(calibration sample {fig.calibration_items})")
    if fig.tiers:
        click.echo("tiers: " + ", ".join(f"{k} {v}" for k, v in sorted(fig.tiers.items())))
    if fig.failed_calls:
        click.echo(f"\nfailed calls ({len(fig.failed_calls)}):", err=True)
        for f in fig.failed_calls[:max_failures]:
            click.echo(f"  {f.call_id}  [{f.code}] {f.message}", err=True)
        if len(fig.failed_calls) > max_failures:
            click.echo(f"  ... and {len(fig.failed_calls) - max_failures} more (qa runs --id {result.run_id})",
                       err=True)
    if no_classifiers(result.versions):
        click.echo("classifiers: none — no models were found, findings come from the rules alone "
                   "(no complaint-risk routing); see the models_dir setting", err=True)
    art = result.artifacts
    if art.export_dir:
        click.echo(f"\nexport: {art.export_dir}")
    if art.report_path:
        click.echo(f"report: {art.report_path}")


def exit_code(result: PipelineResult) -> int:
    return {"ok": EXIT_OK, "partial": EXIT_PARTIAL}.get(result.status, EXIT_FAILED)


def run(app: App, settings: Settings | None = None, *, stages: Any = None, factory: Any = None,
        **options: Any) -> PipelineResult:
    """Run the pipeline with ``PipelineOptions(**options)`` on the configured database."""
    from ..pipeline.progress import auto_progress
    from ..pipeline.run import PipelineOptions, run_pipeline

    return run_pipeline(factory or app.session_factory, settings or app.settings, PipelineOptions(**options),
                        stages=stages, progress=auto_progress(_log_format()))


def executor_options(default: str):
    """``--executor``, ``--address``, ``--workers`` and ``--calls-per-decode``; the command gets
    ``workers`` as the executor options."""
    def decorate(fn):
        options = [
            click.option("--executor", type=click.Choice(["local", "serial", "ray"]), default=default,
                         show_default=True,
                         help="local: worker processes on this machine; serial: everything in this process; "
                              "ray: Ray (pip install 'qa-speech[ray]')."),
            click.option("--address", help="Ray cluster address (default: start a local Ray instance)."),
            click.option("--workers", "n_workers", type=int, default=0, help="CPU worker processes (default: cores - 1)."),
            click.option("--calls-per-decode", type=int, default=4, show_default=True,
                         help="Calls whose speech windows share the decoder's batches."),
        ]
        for option in reversed(options):
            fn = option(fn)
        return fn
    return decorate


def workers_of(n_workers: int, calls_per_decode: int):
    from ..pipeline.local import ExecutorOptions

    return ExecutorOptions(workers=n_workers, calls_per_decode=calls_per_decode)


def source_options(fn):
    options = [
        click.option("--source", type=click.Path(exists=True, file_okay=False, path_type=Path),
                     help="Folder of recordings to ingest first (recursive)."),
        click.option("--manifest", type=click.Path(exists=True, dir_okay=False, path_type=Path),
                     help="Manifest CSV/JSONL of recordings to ingest first."),
        click.option("--date", "day", metavar="DAY",
                     help="YYYY-MM-DD, today or yesterday (on the clock of the timezone setting): the "
                          "report covers calls started this day (default: this run's calls; the export "
                          "folder is named after today)."),
        executor_options("local"),
        click.option("--no-export", is_flag=True, help="Skip writing the day's export and report."),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def day_option(app: App, value: str | None) -> date | None:
    if not value:
        return None
    try:
        return parse_day(value, app.settings.tz)
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="--date") from e


def _batch(app: App, kind: str, source: Path | None, manifest: Path | None, day: str | None, executor: str,
           address: str | None, n_workers: int, calls_per_decode: int, no_export: bool) -> None:
    result = run(app, kind=kind, source=str(source) if source else None,
                 manifest=str(manifest) if manifest else None, day=day_option(app, day), executor=executor,
                 address=address, workers=workers_of(n_workers, calls_per_decode), export=not no_export)
    print_result(result)
    sys.exit(exit_code(result))


@click.command("run")
@source_options
@pass_app
@domain_errors
def run_cmd(app: App, source, manifest, day, executor, address, n_workers, calls_per_decode, no_export) -> None:
    """Run the stages over every call in the database whose work is unfinished (after
    ingesting --source or --manifest when given), then export and report.

    Exit status: 0 all calls done, 2 finished with some calls failed, 1 the run failed."""
    if source and manifest:
        raise click.UsageError("give --source or --manifest, not both")
    _batch(app, "run", source, manifest, day, executor, address, n_workers, calls_per_decode, no_export)


@click.command("nightly")
@source_options
@click.option("--log-format", type=click.Choice(["auto", "text", "json"]), default=None,
              help="Log format (default: the global --log-format; auto is JSON lines when not on a terminal).")
@click.option("--purge", "then_purge", is_flag=True,
              help="Afterwards, purge the calls past their retention period (the retention_days setting).")
@pass_app
@domain_errors
def nightly_cmd(app: App, source, manifest, day, executor, address, n_workers, calls_per_decode, no_export,
                log_format, then_purge) -> None:
    """The nightly batch job: ingest what is new in --source or --manifest, run every stage
    over unfinished calls, write the day's export and report, and print a summary. Takes the
    database's run lock; a re-run after a crash continues where work stopped.

    Exit status: 0 all calls done, 2 finished with some calls failed, 1 the run itself failed."""
    if (source is None) == (manifest is None):
        raise click.UsageError("give --source DIR or --manifest FILE")
    qa_logger = logging.getLogger("qa")
    if log_format:
        setup_logging(logging.getLevelName(qa_logger.level), log_format)
    # an unattended job's log should say what it did, not only what went wrong
    if qa_logger.level > logging.INFO:
        qa_logger.setLevel(logging.INFO)
    options = None
    if then_purge:  # checked before the run: a wrong policy must not surface only at its end
        from .retention import purge_options

        options = purge_options(app.settings, None, (), False, "")
    result = run(app, kind="nightly", source=str(source) if source else None,
                 manifest=str(manifest) if manifest else None, day=day_option(app, day), executor=executor,
                 address=address, workers=workers_of(n_workers, calls_per_decode), export=not no_export)
    print_result(result)
    status = exit_code(result)
    if options is not None and status != EXIT_FAILED:
        from ..retention import SYSTEM
        from .retention import apply_purge

        status = max(status, apply_purge(app, options, SYSTEM))
    sys.exit(status)


def _print_run_detail(app: App, run: RunSummary) -> None:
    click.echo(f"run {run.id} ({run.kind}): {run.status}, started {app.clock(run.started_at)} "
               f"on {run.host} (pid {run.pid})" + (f", {run.seconds:.1f} s" if run.seconds is not None else ""))
    if run.error:
        click.echo(f"error: {run.error}")
    click.echo(f"options: {run.options}")
    if run.timings:
        click.echo("")
        echo_table(_timing_rows(run.timings), TIMING_HEADERS)
    counts = run.counts
    if counts:
        click.echo("")
        for key in ("calls", "by_status", "ingest", "utterances", "findings", "findings_by_category", "tiers",
                    "review_items"):
            if key in counts:
                click.echo(f"{key}: {counts[key]}")
    for key, value in run.versions.items():
        click.echo(f"version {key}: {value}")
    if no_classifiers(run.versions):
        click.echo("classifiers: none (analysed with the rules alone)")


@click.command("runs")
@click.option("--limit", type=int, default=20, show_default=True)
@click.option("--kind", type=click.Choice(["run", "nightly", "demo", "transcribe", "analyze", "score"]),
              help="Only runs of this kind.")
@click.option("--id", "run_id", type=int, help="Show one run in detail.")
@pass_app
@domain_errors
def runs_cmd(app: App, limit: int, kind: str | None, run_id: int | None) -> None:
    """List past batch runs with their figures (or one run in detail with --id)."""
    from ..pipeline.runs import get_run, list_runs
    from ..storage.locks import locks

    with app.session_factory() as session:
        if run_id is not None:
            run = get_run(session, run_id)
            if run is None:
                raise click.ClickException(f"no run {run_id}")
            _print_run_detail(app, run)
            return
        runs = list_runs(session, limit=limit, kind=kind)
        held = locks(session)
    rows = []
    for r in runs:
        by_stage = {t.stage: t for t in r.timings}
        tr, an = by_stage.get("transcribe"), by_stage.get("analyze")
        rows.append((r.id, r.kind, r.status, app.clock(r.started_at),
                     "" if r.seconds is None else _fmt(r.seconds, 0), r.counts.get("calls", ""),
                     r.counts.get("failed", ""), _fmt(tr.calls_per_s, 3) if tr else "",
                     _fmt(an.calls_per_s, 3) if an else "", (r.error or "")[:60]))
    echo_table(rows, ("id", "kind", "status", f"started ({app.settings.timezone})", "seconds", "calls", "failed", "transcribe/s",
                      "analyze/s", "error"))
    for lock in held:
        click.echo(f"\nlock {lock.name!r} held by {lock.describe()}")


def _fresh_sqlite(data_dir: Path) -> str:
    """Remove the demo's database (and its WAL files) and exports so that every demo starts
    from nothing."""
    data_dir.mkdir(parents=True, exist_ok=True)
    for name in ("qa.db", "qa.db-wal", "qa.db-shm"):
        (data_dir / name).unlink(missing_ok=True)
    exports = data_dir / "exports"
    if exports.is_dir():
        shutil.rmtree(exports)
    return f"sqlite:///{data_dir / 'qa.db'}"


@click.command("demo")
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path), default=Path("var/demo"),
              show_default=True, help="Where the demo's fresh SQLite file, export and report go.")
@click.option("--manifest", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="Recordings to run over (default: the bundled audio_samples/manifest.csv).")
@click.option("--workers", type=int, default=0, help="CPU worker processes (default: cores - 1).")
@pass_app
@domain_errors
def demo_cmd(app: App, data_dir: Path, manifest: Path | None, workers: int) -> None:
    """The whole pipeline over the bundled sample calls into a FRESH SQLite database, then a
    summary of what it did and where to look."""
    manifest = manifest or BUNDLED_MANIFEST
    if not manifest.exists():
        raise click.ClickException(f"{manifest} is missing: the sample calls are part of the repository")
    from .. import storage
    from ..pipeline.local import ExecutorOptions

    data_dir = data_dir.resolve()
    url = _fresh_sqlite(data_dir)
    settings = replace(app.settings, data_dir=str(data_dir), database_url=url)
    storage.upgrade(url)
    engine = storage.make_engine(url)
    try:
        click.echo(f"demo: the full pipeline over {manifest} into a new database {data_dir / 'qa.db'}")
        result = run(app, settings, factory=storage.session_factory(engine), kind="demo", manifest=str(manifest),
                     day=local_today(settings.tz), workers=ExecutorOptions(workers=workers))
    finally:
        engine.dispose()
    print_result(result)
    _print_demo_guide(result, data_dir)
    sys.exit(exit_code(result))


def _print_demo_guide(result: PipelineResult, data_dir: Path) -> None:
    fig = result.figures
    if fig.findings_by_category:
        click.echo("\nfindings by category:")
        echo_table(sorted(fig.findings_by_category.items(), key=lambda kv: (-kv[1], kv[0])), ("category", "findings"))
    click.echo(f"\ndatabase: {data_dir / 'qa.db'}")
    env = f"QA_DATA_DIR={data_dir} QA_DATABASE_URL=sqlite:///{data_dir / 'qa.db'}"
    click.echo(f"past runs: {env} qa runs")
    click.echo("\nnext steps, for the web UI (质检工作台):")
    click.echo(f"  1. a login:  {env} qa users add zhangmin --role inspector --name 张敏")
    click.echo("               (it asks for a password of 10+ characters; roles: inspector, senior, auditor, admin)")
    click.echo(f"  2. serve it: {env} qa serve")
    click.echo("  3. open the address it prints and log in as zhangmin: the queue lists the flagged sample calls")


def register(group: click.Group) -> None:
    group.add_command(run_cmd)
    group.add_command(nightly_cmd)
    group.add_command(runs_cmd)
    group.add_command(demo_cmd)
