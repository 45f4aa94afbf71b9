"""Speech recognition commands: ``qa transcribe`` and ``qa models``."""

from __future__ import annotations

import sys

import click

from .common import App, domain_errors, echo_table, pass_app
from .pipeline import executor_options, exit_code, print_failures, run, workers_of


@click.command("transcribe")
@click.argument("call_ids", nargs=-1)
@click.option("--force", is_flag=True, help="Transcribe again calls that already have a transcript.")
@click.option("--batch-size", type=click.IntRange(1), help="Decoder rows per batch (default: asr_batch_size).")
@executor_options("serial")
@pass_app
@domain_errors
def transcribe_cmd(app: App, call_ids: tuple[str, ...], force: bool, batch_size: int | None, executor: str,
                   address: str | None, n_workers: int, calls_per_decode: int) -> None:
    """Transcribe registered calls (or the given ones) into role-labelled utterances, as a
    batch run of the transcribe stage (it takes the run lock and shows in ``qa runs``). Exits
    with status 2 when some calls failed; each failed call keeps its error code and message."""
    import dataclasses

    from ..pipeline.stages import WhisperStages

    settings = app.settings
    if batch_size:
        settings = dataclasses.replace(settings, asr_batch_size=batch_size)
    result = run(app, settings, stages=WhisperStages(force=force), kind="transcribe", steps=("transcribe",),
                 call_ids=call_ids, force=force, executor=executor, address=address,
                 workers=workers_of(n_workers, calls_per_decode))
    stored = [o for o in result.outcomes if o.stage == "transcribe" and o.ok]
    timing = next((t for t in result.timings if t.stage == "transcribe"), None)
    audio_s = sum(o.ref.duration_s for o in stored)
    wall_s = timing.seconds if timing else 0.0
    speed = f" ({audio_s / wall_s:.1f}x realtime)" if wall_s > 0 else ""
    click.echo(f"{len(stored)} of {len(stored) + len(result.failures)} calls transcribed, {len(result.failures)} failed, "
               f"{sum(o.count for o in stored)} utterances; {audio_s:.0f} s of audio in {wall_s:.0f} s{speed} "
               f"with {settings.asr_model}")
    print_failures(result)
    sys.exit(exit_code(result))


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
