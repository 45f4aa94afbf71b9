"""Small stand-ins for the ASR and rule stages so the orchestration tests run in seconds.

They write real rows (transcripts, utterances, analyses, findings) with the same idempotency
rules as the real stages; scoring/routing is the real one. Module-level functions, so the
spawned worker processes can unpickle them. A file whose name contains ``prep-fails`` fails
in prepare, ``worker-dies`` kills the worker process preparing it, ``asr-fails`` breaks the
decoder's batch, ``rule-fails`` fails in analysis.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from sqlalchemy import select

from qa.errors import AudioError, RuleError, TranscriptionError
from qa.storage.models import Analysis, Call, Finding, Transcript, UtteranceRow
from qa.pipeline.stage_impl import score_route
from qa.pipeline.stages import Artifacts, Stages

FAKE_SHA = "f" * 64


def prepare(session, settings, ref):
    if "worker-dies" in ref.file_path:
        os._exit(1)  # as a segfault in a codec or the OOM killer would end the worker
    if "prep-fails" in ref.file_path:
        raise AudioError(f"{ref.file_path}: cannot decode", code="audio.corrupt")
    size = Path(ref.file_path).stat().st_size
    session.get(Call, ref.pk).status = "prepared"
    return {"pk": ref.pk, "call_id": ref.call_id, "size": size, "worker": os.getpid()}


def load_asr(settings):
    return {"model": "fake-asr", "driver": os.getpid()}


def broken_asr(settings):
    raise RuntimeError("no model here")


def decode(asr, prepared):
    if any("asr-fails" in p["call_id"] for p in prepared):
        raise TranscriptionError("decoder blew up", code="asr.decode")
    return [[f"您好 {p['call_id']}", f"文件大小 {p['size']}"] for p in prepared]


def store_transcript(session, asr, prepared, decoded):
    pk = prepared["pk"]
    existing = session.scalar(select(Transcript).where(Transcript.call_id == pk, Transcript.asr_sha256 == FAKE_SHA))
    if existing is None:
        tr = Transcript(call_id=pk, asr_model=asr["model"], asr_sha256=FAKE_SHA, options={}, options_sha256=FAKE_SHA)
        session.add(tr)
        session.flush()
        for idx, text in enumerate(decoded):
            role = "agent" if idx % 2 == 0 else "customer"
            session.add(UtteranceRow(transcript_id=tr.id, call_id=pk, idx=idx, role=role, start_s=float(idx),
                                     end_s=idx + 0.9, text=text))
    session.get(Call, pk).status = "transcribed"
    return len(decoded)


def open_analyzer(settings):
    return {"pack": "fake-pack", "version": "1"}


def analyze(session, analyzer, pk):
    call = session.get(Call, pk)
    if "rule-fails" in call.call_id:
        raise RuleError("rule cannot evaluate this call", code="rules.eval")
    tr = session.scalar(select(Transcript).where(Transcript.call_id == pk, Transcript.is_current.is_(True)))
    existing = session.scalar(select(Analysis).where(Analysis.transcript_id == tr.id))
    findings = 0
    if existing is None:
        an = Analysis(call_id=pk, transcript_id=tr.id, rule_pack_name=analyzer["pack"],
                      rule_pack_version=analyzer["version"], rule_pack_sha256=FAKE_SHA, classifiers_sha256="")
        session.add(an)
        session.flush()
        if "fatal" in call.call_id:
            session.add(Finding(analysis_id=an.id, call_id=pk, rule_id="fake.fatal", category="guarantee_promise",
                                severity="fatal", matched_text="保本", evidence="保本保息"))
            findings = 1
    call.status = "analyzed"
    return findings


def export(factory, settings, scope, out_dir):
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with factory() as session:
        rows = session.execute(select(Call.call_id, Call.status).order_by(Call.call_id)).all()
    path = out / "calls.json"
    doc = {"day": scope.day.isoformat(), "since": str(scope.since), "calls": dict(rows)}
    path.write_text(json.dumps(doc), encoding="utf-8")
    return Artifacts(export_dir=str(out), report_path=str(path))


FAKE_STAGES = Stages(prepare=prepare, load_asr=load_asr, decode=decode, store_transcript=store_transcript,
                     open_analyzer=open_analyzer, analyze=analyze, score_route=score_route, export=export)


def make_corpus(folder: Path, names: list[str]) -> Path:
    """Small real WAV files (the fakes never decode them, ingest does)."""
    from conftest import tone, write_wav

    folder.mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(names):
        write_wav(folder / f"{name}.wav", tone(1.0 + 0.1 * i, channels=2, freq=300 + 40 * i))
    return folder


# ---------------------------------------------------------------- perfect "ASR" from the sidecars

def sidecar_prepare(session, settings, ref):
    """The sample calls' sidecar turns stand in for decoding + recognition, so the real rule,
    scoring and export stages can be tested end to end in seconds."""
    sidecar = Path(ref.file_path).with_suffix(".json")
    turns = json.loads(sidecar.read_text(encoding="utf-8"))["turns"]
    return {"pk": ref.pk, "call_id": ref.call_id, "turns": turns}


def sidecar_decode(asr, prepared):
    return [p["turns"] for p in prepared]


def sidecar_store(session, asr, prepared, turns):
    pk = prepared["pk"]
    if session.scalar(select(Transcript).where(Transcript.call_id == pk, Transcript.asr_sha256 == FAKE_SHA)) is None:
        tr = Transcript(call_id=pk, asr_model="sidecar", asr_sha256=FAKE_SHA, options={}, options_sha256=FAKE_SHA)
        session.add(tr)
        session.flush()
        for idx, t in enumerate(turns):
            session.add(UtteranceRow(transcript_id=tr.id, call_id=pk, idx=idx, role=t["role"], start_s=t["start_s"],
                                     end_s=t["end_s"], text=t["text"]))
    session.get(Call, pk).status = "transcribed"
    return len(turns)


def sidecar_stages() -> Stages:
    from qa.rules import stage as analyze
    from qa.pipeline import stage_impl

    return Stages(prepare=sidecar_prepare, load_asr=load_asr, decode=sidecar_decode, store_transcript=sidecar_store,
                  open_analyzer=analyze.open_analyzer, analyze=analyze.analyze_call,
                  score_route=stage_impl.score_route, export=stage_impl.export)


def stealing_asr(settings):
    """Another run takes the lock over while this one loads its model (as after a long freeze)."""
    import time

    from sqlalchemy import create_engine, update

    from qa.storage.models import RunLock

    engine = create_engine(settings.effective_database_url)
    with engine.begin() as conn:
        conn.execute(update(RunLock).values(holder="nightly@elsewhere:1:thief"))
    engine.dispose()
    time.sleep(0.8)  # a few heartbeats notice it
    return load_asr(settings)
