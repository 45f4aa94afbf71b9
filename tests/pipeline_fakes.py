"""Small stand-ins for the ASR and rule stages so the orchestration tests run in seconds.

They write real rows (transcripts, utterances, analyses, findings) with the same idempotency
rules as the real stages; scoring/routing is the real one. Module-level classes, so the
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
from qa.pipeline.analyses import AnalyzeResult
from qa.pipeline.stages import Artifacts, WhisperStages, score_route
from qa.storage.models import Analysis, Call, Finding, Transcript, UtteranceRow

FAKE_SHA = "f" * 64


class FakeStages:
    """Every stage faked but scoring: prepared calls are plain dicts that record the process
    that prepared them (a worker) and the one that decoded them (the driver)."""

    def prepare(self, settings, refs):
        out = []
        for ref in refs:
            if "worker-dies" in ref.file_path:
                os._exit(1)  # as a segfault in a codec or the OOM killer would end the worker
            if "prep-fails" in ref.file_path:
                out.append(AudioError(f"{ref.file_path}: cannot decode", code="audio.corrupt"))
                continue
            size = Path(ref.file_path).stat().st_size
            out.append({"pk": ref.pk, "call_id": ref.call_id, "size": size, "worker": os.getpid()})
        return out

    def load_asr(self, settings):
        return {"model": "fake-asr", "driver": os.getpid()}

    def decode(self, asr, prepared):
        if any("asr-fails" in p["call_id"] for p in prepared):
            raise TranscriptionError("decoder blew up", code="asr.decode")
        # the first line names the process that prepared the call and the one that decoded it
        return [[f"您好 {p['call_id']} {p['worker']} {asr['driver']}", f"文件大小 {p['size']}"] for p in prepared]

    def store_transcript(self, session, asr, prepared, decoded):
        pk = prepared["pk"]
        existing = session.scalar(select(Transcript).where(Transcript.call_id == pk, Transcript.asr_sha256 == FAKE_SHA))
        if existing is None:
            tr = Transcript(call_id=pk, asr_model=asr["model"], asr_sha256=FAKE_SHA, options={},
                            options_sha256=FAKE_SHA)
            session.add(tr)
            session.flush()
            for idx, text in enumerate(decoded):
                role = "agent" if idx % 2 == 0 else "customer"
                session.add(UtteranceRow(transcript_id=tr.id, call_id=pk, idx=idx, role=role, start_s=float(idx),
                                         end_s=idx + 0.9, text=text))
        session.get(Call, pk).status = "transcribed"
        return len(decoded)

    def open_analyzer(self, settings):
        return {"pack": "fake-pack", "version": "1"}

    def analyze(self, session, analyzer, pk, *, wait_for_earlier=True):
        call = session.get(Call, pk)
        if "rule-fails" in call.call_id:
            raise RuleError("rule cannot evaluate this call", code="rules.eval")
        tr = session.scalar(select(Transcript).where(Transcript.call_id == pk, Transcript.is_current.is_(True)))
        existing = session.scalar(select(Analysis).where(Analysis.transcript_id == tr.id))
        findings = 0
        status = "unchanged"
        if existing is None:
            status = "analyzed"
            existing = Analysis(call_id=pk, transcript_id=tr.id, rule_pack_name=analyzer["pack"],
                                rule_pack_version=analyzer["version"], rule_pack_sha256=FAKE_SHA, classifiers_sha256="")
            session.add(existing)
            session.flush()
            if "fatal" in call.call_id:
                session.add(Finding(analysis_id=existing.id, call_id=pk, rule_id="fake.fatal",
                                    category="guarantee_promise", severity="fatal", matched_text="保本",
                                    evidence="保本保息"))
                findings = 1
        call.status = "analyzed"
        return AnalyzeResult(call.call_id, status, existing.id, findings, None)

    def score_route(self, session, settings, call_pk):
        return score_route(session, settings, call_pk)

    def export(self, factory, settings, scope, out_dir):
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        with factory() as session:
            rows = session.execute(select(Call.call_id, Call.status).order_by(Call.call_id)).all()
        path = out / "calls.json"
        doc = {"day": scope.day.isoformat(), "since": str(scope.since), "calls": dict(rows)}
        path.write_text(json.dumps(doc), encoding="utf-8")
        return Artifacts(export_dir=str(out), report_path=str(path))


FAKE_STAGES = FakeStages()


class BrokenAsr(FakeStages):
    def load_asr(self, settings):
        raise RuntimeError("no model here")


class StealingAsr(FakeStages):
    def load_asr(self, settings):
        """Another run takes the lock over while this one loads its model (as after a long freeze)."""
        import time

        from sqlalchemy import create_engine, update

        from qa.storage.models import RunLock

        engine = create_engine(settings.effective_database_url)
        with engine.begin() as conn:
            conn.execute(update(RunLock).values(holder="nightly@elsewhere:1:thief"))
        engine.dispose()
        time.sleep(0.8)  # a few heartbeats notice it
        return super().load_asr(settings)


def make_corpus(folder: Path, names: list[str]) -> Path:
    """Small real WAV files (the fakes never decode them, ingest does)."""
    from builders import tone, write_wav

    folder.mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(names):
        write_wav(folder / f"{name}.wav", tone(1.0 + 0.1 * i, channels=2, freq=300 + 40 * i))
    return folder


# ---------------------------------------------------------------- perfect "ASR" from the sidecars

class SidecarStages(WhisperStages):
    """The sample calls' sidecar turns stand in for decoding + recognition, so the real rule,
    scoring and export stages can be tested end to end in seconds."""

    def prepare(self, settings, refs):
        out = []
        for ref in refs:
            turns = json.loads(Path(ref.file_path).with_suffix(".json").read_text(encoding="utf-8"))["turns"]
            out.append({"pk": ref.pk, "call_id": ref.call_id, "turns": turns})
        return out

    def load_asr(self, settings):
        return {"model": "sidecar"}

    def decode(self, asr, prepared):
        return [p["turns"] for p in prepared]

    def store_transcript(self, session, asr, prepared, turns):
        pk = prepared["pk"]
        if session.scalar(select(Transcript).where(Transcript.call_id == pk,
                                                   Transcript.asr_sha256 == FAKE_SHA)) is None:
            tr = Transcript(call_id=pk, asr_model="sidecar", asr_sha256=FAKE_SHA, options={},
                            options_sha256=FAKE_SHA)
            session.add(tr)
            session.flush()
            for idx, t in enumerate(turns):
                session.add(UtteranceRow(transcript_id=tr.id, call_id=pk, idx=idx, role=t["role"],
                                         start_s=t["start_s"], end_s=t["end_s"], text=t["text"]))
        session.get(Call, pk).status = "transcribed"
        return len(turns)


class SidecarAsr(WhisperStages):
    """The real transcript store and everything after it; only recognition is replaced: each
    stereo channel's speech is the sidecar's turns of that role ("perfect ASR"). A call whose
    name says ``no-speech`` has no speech at all."""

    def prepare(self, settings, refs):
        import numpy as np

        from qa.asr.stage import PreparedCall, PreparedChannel
        from qa.asr.vad import SpeechSegment

        out = []
        self._turns = {}
        for ref in refs:
            turns = self._turns[ref.pk] = [] if "no-speech" in ref.call_id else json.loads(
                Path(ref.file_path).with_suffix(".json").read_text(encoding="utf-8"))["turns"]
            end = max((t["end_s"] for t in turns), default=5.0) + 1.0
            channels = tuple(
                PreparedChannel(i, role, np.zeros(int(end * 16000), dtype=np.float32),
                                tuple(SpeechSegment(t["start_s"], t["end_s"]) for t in turns if t["role"] == role), None)
                for i, role in enumerate(("agent", "customer")))
            out.append(PreparedCall(ref.pk, ref.call_id, end, "wav", 8000, 2, channels))
        return out

    def load_asr(self, settings):
        from types import SimpleNamespace

        from qa.asr.stage import AsrOptions

        return SimpleNamespace(options=AsrOptions(), loaded=SimpleNamespace(name="sidecar", sha256=FAKE_SHA))

    def decode(self, asr, prepared):
        from qa.asr.engine import WindowResult
        from qa.asr.stage import DecodedCall, DecodedSegment

        decoded = []
        for call in prepared:
            segments = []
            for ch in call.channels:
                texts = {(t["start_s"], t["end_s"]): t["text"] for t in self._turns.get(call.call_pk, [])
                         if t["role"] == ch.role}
                segments += [DecodedSegment(ch.index, seg, WindowResult((), texts[(seg.start_s, seg.end_s)], -0.2,
                                                                        0.01, 1.2, 0.0)) for seg in ch.segments]
            decoded.append(DecodedCall(call.call_pk, tuple(segments)))
        return decoded
