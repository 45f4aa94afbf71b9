"""Rule commands: ``qa analyze``, ``qa rules lint|test|explain|backtest`` and ``qa eval rules``."""

from __future__ import annotations

import sys
from collections import Counter
from typing import TYPE_CHECKING

import click

from ..config import REPO_ROOT
from .common import EXIT_FAILED, App, domain_errors, echo_table, pass_app
from .eval import eval_group
from .pipeline import executor_options, exit_code, print_failures, run, workers_of

if TYPE_CHECKING:
    from ..rules.engine import RuleEngine

DEFAULT_SAMPLES = REPO_ROOT / "audio_samples"


def _engine(app: App, pack_dir: str | None) -> RuleEngine:
    from ..rules.engine import RuleEngine
    from ..rules.loader import load_pack
    from ..rules.stage import engine_options

    return RuleEngine(load_pack(pack_dir or app.settings.rules_pack), engine_options(app.settings))


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.0%}"


@click.command("analyze")
@click.argument("call_ids", nargs=-1)
@click.option("--pack", "pack_dir", type=click.Path(file_okay=False, exists=True),
              help="Rule pack folder (default: the rules_pack setting).")
@click.option("--no-classifiers", is_flag=True, help="Run the rules only.")
@executor_options("serial")
@pass_app
@domain_errors
def analyze_cmd(app: App, call_ids: tuple[str, ...], pack_dir: str | None, no_classifiers: bool, executor: str,
                address: str | None, n_workers: int, calls_per_decode: int) -> None:
    """Run the rule pack (and classifiers) over stored transcripts: the given calls, or every
    call with a current transcript, as a batch run of the analyze stage. A new pack version
    adds a new analysis and keeps the old; the same pack and models change nothing."""
    import dataclasses

    from ..pipeline.stages import WhisperStages

    settings = dataclasses.replace(app.settings, rules_pack=pack_dir) if pack_dir else app.settings
    result = run(app, settings, stages=WhisperStages(classifiers=not no_classifiers), kind="analyze",
                 steps=("analyze",), call_ids=call_ids, reanalyze=True, executor=executor, address=address,
                 workers=workers_of(n_workers, calls_per_decode))
    analyzed = [o for o in result.outcomes if o.stage == "analyze"]
    echo_table([(o.ref.call_id, o.value.status if o.ok else "failed", o.count if o.ok else "",
                 "" if not o.ok or o.value.score is None else f"{o.value.score:g}", o.code or "")
                for o in sorted(analyzed, key=lambda o: o.ref.pk)], ("call", "status", "findings", "score", "error"))
    counts = Counter(o.value.status if o.ok else "failed" for o in analyzed)
    pack = result.versions.get("rule_pack") or {}
    click.echo(f"\n{pack.get('name', '-')} {pack.get('version', '')} (sha256 {pack.get('sha256', '')[:12]}), "
               f"classifiers: {result.versions.get('classifiers_sha256', '')[:12] or 'none'}; "
               + (", ".join(f"{n} {s}" for s, n in sorted(counts.items())) or "nothing to analyze"))
    print_failures(result)
    sys.exit(exit_code(result))


@click.group("rules")
def rules_group() -> None:
    """Rule packs: validate, test, explain a call, backtest a candidate pack."""


@rules_group.command("lint")
@click.argument("pack_dir", required=False, type=click.Path(file_okay=False))
@click.option("--strict", is_flag=True, help="Treat warnings (too few tests) as errors.")
@pass_app
@domain_errors
def lint_cmd(app: App, pack_dir: str | None, strict: bool) -> None:
    """Validate every file of a pack; each problem is printed as file:line: message."""
    from ..rules.loader import lint_pack

    report = lint_pack(pack_dir or app.settings.rules_pack)
    for line in report.errors:
        click.echo(f"error: {line}", err=True)
    for line in report.warnings:
        click.echo(f"warning: {line}", err=True)
    if report.errors or (strict and report.warnings):
        raise click.ClickException(f"{len(report.errors)} errors, {len(report.warnings)} warnings")
    pack = report.pack
    cats = len({r.category for r in pack.rules})
    tests = sum(len(r.tests) for r in pack.rules)
    click.echo(f"{pack.name} {pack.version}: {len(pack.rules)} rules, {cats} categories, {tests} tests, "
               f"sha256 {pack.sha256}; {len(report.warnings)} warnings")


@rules_group.command("test")
@click.argument("pack_dir", required=False, type=click.Path(file_okay=False))
@click.option("--rule", "rule_ids", multiple=True, help="Only these rule ids.")
@click.option("-v", "--verbose", is_flag=True, help="Print every test, not just failures.")
@pass_app
@domain_errors
def test_cmd(app: App, pack_dir: str | None, rule_ids: tuple[str, ...], verbose: bool) -> None:
    """Run the test snippets written beside each rule."""
    from ..rules.testing import run_rule_tests

    engine = _engine(app, pack_dir)
    rules = tuple(r for r in engine.pack.rules if not rule_ids or r.id in rule_ids)
    unknown = set(rule_ids) - {r.id for r in rules}
    if unknown:
        raise click.ClickException(f"unknown rule ids: {', '.join(sorted(unknown))}")
    results = run_rule_tests(engine, rules)
    for r in results:
        if verbose or not r.ok:
            mark = "ok  " if r.ok else "FAIL"
            click.echo(f"{mark} {r.where} {r.rule_id} {r.name}: expected {r.expect}, got {r.got}")
            if not r.ok:
                click.echo(f"     why: {r.why}")
    failed = sum(not r.ok for r in results)
    click.echo(f"{len(results) - failed} passed, {failed} failed ({len(rules)} rules)")
    if failed:
        sys.exit(EXIT_FAILED)


@rules_group.command("explain")
@click.argument("call_id")
@click.option("--pack", "pack_dir", type=click.Path(file_okay=False, exists=True),
              help="Rule pack folder (default: the rules_pack setting).")
@click.option("--transcript", "show_transcript", is_flag=True, help="Print the transcript first.")
@pass_app
@domain_errors
def explain_cmd(app: App, call_id: str, pack_dir: str | None, show_transcript: bool) -> None:
    """For every rule: fired, passed or not applicable on CALL_ID, and why."""
    from ..rules.calltype import infer_business_line
    from ..rules.explain import explain, render
    from ..rules.stage import AnalyzeOptions
    from ..storage.history import with_customer_history
    from ..storage.transcripts import call_named, current_scores, transcript_of

    engine = _engine(app, pack_dir)
    with app.session_factory() as session:
        call = call_named(session, call_id)
        transcript, _ = with_customer_history(session, call, transcript_of(session, call_id), engine)
        # the call type the analysis assumed, from the topic it stored
        inferred = infer_business_line(transcript.meta, current_scores(session, call),
                                       AnalyzeOptions.from_settings(app.settings).business_line_min_prob)
    for line in render(explain(engine, transcript, inferred), show_transcript):
        click.echo(line)


@rules_group.command("backtest")
@click.argument("pack_dir", type=click.Path(file_okay=False, exists=True))
@click.option("--calls", "show_calls", is_flag=True, help="List each gained and lost hit.")
@pass_app
@domain_errors
def backtest_cmd(app: App, pack_dir: str, show_calls: bool) -> None:
    """Run the candidate pack PACK_DIR over stored transcripts: hits gained and lost per rule
    against the current analyses, and precision estimated from inspectors' decisions."""
    from ..review.backtest import backtest

    engine = _engine(app, pack_dir)
    with app.session_factory() as session:
        report = backtest(session, engine)
    click.echo(f"candidate {report.candidate} over {report.calls} calls with a current transcript\n")
    rows = [(r.rule_id, r.current_hits, r.candidate_hits, f"+{r.gained}", f"-{r.lost}", r.confirmed, r.rejected,
             _pct(r.precision), _pct(r.candidate_precision), r.lost_confirmed) for r in report.rules
            if r.current_hits or r.candidate_hits or r.confirmed or r.rejected]
    echo_table(rows, ("rule", "current", "candidate", "gained", "lost", "confirmed", "rejected", "precision",
                      "cand. precision", "lost confirmed"))
    click.echo(f"\n{len(report.gained)} hits gained, {len(report.lost)} lost")
    if show_calls:
        for cid, rid in report.gained:
            click.echo(f"+ {cid} {rid}")
        for cid, rid in report.lost:
            click.echo(f"- {cid} {rid}")


@click.command("rules")
@click.option("--samples", "samples_dir", type=click.Path(file_okay=False, exists=True), default=str(DEFAULT_SAMPLES),
              show_default=True)
@click.option("--pack", "pack_dir", type=click.Path(file_okay=False, exists=True))
@click.option("--source", type=click.Choice(["auto", "asr", "reference"]), default="auto", show_default=True,
              help="asr: stored transcripts of the sample calls; reference: the sidecar turns; "
                   "auto: asr where a call has been transcribed, else reference.")
@click.option("--homophone-noise", "noise", type=click.FloatRange(0.0, 1.0), default=0.0,
              help="With --source reference: replace this share of the characters by random homophones.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of --homophone-noise.")
@click.option("-v", "--verbose", is_flag=True, help="Explain every miss and false alarm.")
@pass_app
@domain_errors
def eval_rules_cmd(app: App, samples_dir: str, pack_dir: str | None, source: str, noise: float, seed: int,
                   verbose: bool) -> None:
    """Per-category recall and precision of the rule pack on the labelled sample calls."""
    import random

    from sqlalchemy import select

    from ..rules.evaluate import evaluate, read_samples, with_homophone_noise
    from ..storage.models import Call
    from ..storage.transcripts import current_transcript

    engine = _engine(app, pack_dir)
    samples = read_samples(samples_dir)
    transcripts = {}
    label = "asr"
    if noise:
        if source != "reference":
            raise click.ClickException("--homophone-noise needs --source reference")
        rng = random.Random(seed)
        transcripts = {s.call_id: with_homophone_noise(s.reference, noise, rng) for s in samples}
        label = f"reference+{noise:.0%} homophones"
    elif source != "reference":
        with app.session_factory() as session:
            for s in samples:
                call = session.scalars(select(Call).where(Call.call_id == s.call_id)).first()
                loaded = current_transcript(session, call) if call is not None else None
                if loaded is not None:
                    transcripts[s.call_id] = loaded[1]
        if source == "asr" and len(transcripts) < len(samples):
            missing = sorted({s.call_id for s in samples} - set(transcripts))
            raise click.ClickException(f"no stored transcript for {', '.join(missing)} (run qa run or use --source reference)")
    report = evaluate(engine, samples, transcripts, label)
    by_source = Counter(c.source for c in report.calls)
    click.echo(f"{engine.pack.name} {engine.pack.version} on {len(samples)} calls "
               f"({', '.join(f'{n} {s}' for s, n in sorted(by_source.items()))} transcripts)\n")
    echo_table([(c.category, c.tp, c.fn, c.fp, _pct(c.recall), _pct(c.precision)) for c in report.categories],
               ("category", "tp", "missed", "false alarms", "recall", "precision"))
    t = report.totals()
    click.echo(f"\nall categories: recall {_pct(t.recall)} ({t.tp}/{t.tp + t.fn}), precision {_pct(t.precision)} "
               f"({t.tp}/{t.tp + t.fp})")
    for c in report.calls:
        if c.missed or c.false_alarms:
            click.echo(f"{c.call_id} ({c.source}): missed {sorted(c.missed) or '-'}, "
                       f"false alarms {sorted(c.false_alarms) or '-'}")
            if verbose:
                for cat, why in sorted(c.why.items()):
                    click.echo(f"    {cat}: {why}")


def register(group: click.Group) -> None:
    group.add_command(analyze_cmd)
    group.add_command(rules_group)
    eval_group(group).add_command(eval_rules_cmd)
