"""``qa eval``: accuracy of the stages on the labelled sample calls. This module owns the group
and ``qa eval asr``; other areas add their subcommands to the same group (``qa eval rules``)."""

from __future__ import annotations

import click

from ..config import REPO_ROOT
from .common import App, domain_errors, echo_table, pass_app

DEFAULT_SAMPLES = REPO_ROOT / "audio_samples"


def eval_group(group: click.Group) -> click.Group:
    """The ``eval`` group of ``group``, created on first use (by whichever area registers first)."""
    existing = group.commands.get("eval")
    if isinstance(existing, click.Group):
        return existing
    created = click.Group("eval", help="Evaluate recognition and rules on the labelled samples.")
    group.add_command(created)
    return created


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


@click.command("asr")
@click.option("--samples", "samples_dir", type=click.Path(file_okay=False, exists=True), default=str(DEFAULT_SAMPLES),
              show_default=True)
@click.option("--call", "only", multiple=True, help="Evaluate only these call ids.")
@click.option("-v", "--verbose", is_flag=True, help="Print each call's hypothesis per role.")
@pass_app
@domain_errors
def eval_asr_cmd(app: App, samples_dir: str, only: tuple[str, ...], verbose: bool) -> None:
    """Character error rate per role and overall on the sample calls against their sidecar
    transcripts, and the compliance phrases the recogniser lost."""
    from ..asr.evaluate import evaluate_samples, read_samples

    samples = [s for s in read_samples(samples_dir) if not only or s.call_id in only]
    if not samples:
        raise click.ClickException("no sample calls to evaluate")
    report = evaluate_samples(app.settings, samples,
                              progress=lambda d, n: click.echo(f"  {d}/{n} calls", err=True))
    rows = []
    for c in report.calls:
        rows.append((c.call_id, c.channel_layout, _pct(c.roles["agent"].cer) if "agent" in c.roles else "-",
                     _pct(c.roles["customer"].cer) if "customer" in c.roles else "-", _pct(c.overall.cer),
                     " ".join(c.missed_phrases) or "-"))
    echo_table(rows, ("call", "layout", "agent CER", "customer CER", "CER", "key phrases missed"))
    agent, customer, overall = report.role_score("agent"), report.role_score("customer"), report.overall
    click.echo(f"\nmodel {report.model} (sha256 {report.sha256[:12]}), {len(report.calls)} calls, "
               f"{report.audio_s:.0f} s of audio in {report.wall_s:.0f} s")
    click.echo(f"CER agent {_pct(agent.cer)} ({agent.errors}/{agent.chars}), customer {_pct(customer.cer)} "
               f"({customer.errors}/{customer.chars}), overall {_pct(overall.cer)} ({overall.errors}/{overall.chars})")
    if verbose:
        for c in report.calls:
            for role, text in c.hypothesis.items():
                click.echo(f"{c.call_id} {role}: {text}")


def register(group: click.Group) -> None:
    eval_group(group).add_command(eval_asr_cmd)
