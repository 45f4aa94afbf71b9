"""Speech recognition commands: ``qa transcribe`` and ``qa models``."""

from __future__ import annotations

import sys

import click

from .common import App, domain_errors, echo_table, pass_app

EXIT_PARTIAL = 2


@click.command("transcribe")
@click.argument("call_ids", nargs=-1)
@click.option("--force", is_flag=True, help="Transcribe again calls that already have a transcript.")
@click.option("--batch-size", type=click.IntRange(1), help="Decoder rows per batch (default: asr_batch_size).")
@pass_app
@domain_errors
def transcribe_cmd(app: App, call_ids: tuple[str, ...], force: bool, batch_size: int | None) -> None:
    """Transcribe registered calls (or the given ones) into role-labelled utterances. Exits with
    status 2 when some calls failed; each failed call keeps its error code and message."""
    import dataclasses

    from ..asr.stage import load_asr, transcribe_calls

    settings = app.settings
    if batch_size:
        settings = dataclasses.replace(settings, asr_batch_size=batch_size)
    factory = app.session_factory
    asr = load_asr(settings)

    def progress(done: int, total: int) -> None:
        click.echo(f"  {done}/{total} calls", err=True)

    report = transcribe_calls(factory, settings, call_ids=list(call_ids) or None, force=force, progress=progress,
                              asr=asr)
    click.echo(f"{report.transcribed} of {report.calls} calls transcribed, {report.failed} failed, "
               f"{report.utterances} utterances; {report.audio_s:.0f} s of audio in {report.wall_s:.0f} s "
               f"({report.speed:.1f}x realtime) with {asr.loaded.name} on {asr.loaded.device}")
    if report.failures:
        echo_table([(c, code, msg[:100]) for c, code, msg in report.failures], ("call", "error", "message"))
        sys.exit(EXIT_PARTIAL)


@click.command("models")
@pass_app
@domain_errors
def models_cmd(app: App) -> None:
    """Show the speech model in use: name, source, sha256 and cached checkpoint (converting the
    registry weights on first use)."""
    from ..asr.weights import resolve_model

    loaded = resolve_model(app.settings)
    dims = loaded.model.dims
    echo_table([
        ("model", loaded.name),
        ("source", loaded.source),
        ("sha256", loaded.sha256),
        ("checkpoint", loaded.path or "-"),
        ("device", f"{loaded.device} ({str(loaded.dtype).replace('torch.', '')})"),
        ("architecture", f"{dims.n_audio_layer}+{dims.n_text_layer} layers, width {dims.n_text_state}, "
                         f"{dims.n_mels} mels, vocabulary {dims.n_vocab}"),
    ], ("", "value"))


def register(group: click.Group) -> None:
    group.add_command(transcribe_cmd)
    group.add_command(models_cmd)
