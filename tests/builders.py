"""Builders for the tests and the benchmarks: one home for every way of making test data.

* audio: :func:`write_wav`, :func:`tone`, and a corpus of damaged recordings
  (:func:`make_bad_corpus`) with the error code each must get;
* rows, one call at a time (``make_call`` ... ``add_review``, :func:`analyzed_call`), or in
  bulk: a synthetic call centre (:func:`seed_calls`), a large open queue (:func:`seed_queue`).

Builders flush; the test commits.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Callable

from sqlalchemy import insert
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from qa.storage.models import (Analysis, Assessment, Call, ClassifierScore, Finding, ReviewDecision, ReviewItem,
                               Transcript, User, UtteranceRow)

T0 = datetime(2026, 11, 23, 9, 0, tzinfo=timezone.utc)


def sha(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


# --- audio ------------------------------------------------------------------------------------

def write_wav(path: Path, samples, rate: int = 8000, subtype: str = "PCM_16") -> Path:
    import numpy as np
    import soundfile as sf

    sf.write(str(path), np.asarray(samples, dtype=np.float32), rate, subtype=subtype)
    return path


def tone(seconds: float, rate: int = 8000, freq: float = 440.0, channels: int = 1, amp: float = 0.3):
    import numpy as np

    t = np.arange(int(seconds * rate)) / rate
    mono = (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)
    return mono if channels == 1 else np.stack([mono * (1 + 0.1 * c) for c in range(channels)], axis=1)


# The bad recordings ingest must reject, with the error code each must get.
BAD_FILE_CODES = {
    "zero.wav": "audio.empty",
    "truncated.wav": "audio.truncated",
    "random.wav": "audio.corrupt",
    "nan.wav": "audio.nan",
    "eight_channels.wav": "audio.channels",
    "too_long.wav": "audio.too_long",
    "silent.wav": "audio.silent",
    "flac_named.wav": "audio.wrong_extension",
    "notes.txt.mp3": "audio.corrupt",
}
BAD_CORPUS_MAX_DURATION_S = 60.0


def make_bad_corpus(folder: Path) -> dict[str, str]:
    """Write one recording per kind of damage into ``folder``; returns file name -> code."""
    import numpy as np
    import soundfile as sf

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "zero.wav").write_bytes(b"")
    good = write_wav(folder / "_tmp_good.wav", tone(2.0))
    (folder / "truncated.wav").write_bytes(good.read_bytes()[:3000])
    good.unlink()
    (folder / "random.wav").write_bytes(np.random.default_rng(7).bytes(20000))
    nan = tone(1.0)
    nan[100:110] = np.nan
    write_wav(folder / "nan.wav", nan, subtype="FLOAT")
    write_wav(folder / "eight_channels.wav", tone(1.0, channels=8))
    write_wav(folder / "too_long.wav", tone(BAD_CORPUS_MAX_DURATION_S + 5, rate=8000, amp=0.1))
    write_wav(folder / "silent.wav", np.zeros(16000, dtype=np.float32))
    sf.write(str(folder / "flac_named.wav"), tone(1.0), 8000, format="FLAC")
    (folder / "notes.txt.mp3").write_text("这不是音频文件。" * 200, encoding="utf-8")
    return dict(BAD_FILE_CODES)


# --- rows, one call at a time ----------------------------------------------------------------

ASR_SHA = hashlib.sha256(b"whisper-base").hexdigest()
PACK_SHA = hashlib.sha256(b"finance-zh 1.2.0").hexdigest()
MODEL_SHA = hashlib.sha256(b"complaint-risk 0.3.1").hexdigest()
POLICY_SHA = hashlib.sha256(b"tier-policy").hexdigest()
DAY0 = datetime(2026, 11, 2, 9, 0, tzinfo=timezone.utc)


def make_call(session: Session, call_id: str, *, agent_id: str | None = "A001", team: str | None = "理财一组",
              started_at: datetime | None = DAY0, duration_s: float | None = 180.0, status: str = "routed",
              **fields) -> Call:
    call = Call(call_id=call_id, recording_sha256=sha(call_id), file_path=f"/data/{call_id}.wav", file_size=1000,
                audio_format="wav", agent_id=agent_id, team=team, started_at=started_at,
                duration_s=duration_s, status=status, **fields)
    session.add(call)
    session.flush()
    return call


def add_transcript(session: Session, call: Call, utterances: list[tuple[str, float, float, str]], *,
                   asr_model: str = "base", asr_sha256: str = ASR_SHA, is_current: bool = True) -> Transcript:
    tr = Transcript(call_id=call.id, asr_model=asr_model, asr_sha256=asr_sha256, options_sha256=sha(asr_model),
                    is_current=is_current)
    tr.utterances = [UtteranceRow(call_id=call.id, idx=i, role=role, start_s=s, end_s=e, text=text)
                     for i, (role, s, e, text) in enumerate(utterances)]
    session.add(tr)
    session.flush()
    return tr


def add_analysis(session: Session, call: Call, transcript: Transcript, findings: list[dict], *,
                 scores: list[tuple[str, str, float]] = (), pack: tuple[str, str, str] = ("finance-zh", "1.2.0", PACK_SHA),
                 score: float | None = None, is_current: bool = True) -> Analysis:
    """``findings``: dicts of Finding fields (rule_id, category, severity, ...);
    ``scores``: (model_name, label, probability)."""
    an = Analysis(call_id=call.id, transcript_id=transcript.id, rule_pack_name=pack[0], rule_pack_version=pack[1],
                  rule_pack_sha256=pack[2], classifiers_sha256=sha(repr(scores)), is_current=is_current, score=score)
    an.findings = [Finding(call_id=call.id, **f) for f in findings]
    an.scores = [ClassifierScore(call_id=call.id, model_name=m, model_version="0.3.1", model_sha256=MODEL_SHA,
                                 label=label, probability=p) for m, label, p in scores]
    session.add(an)
    session.flush()
    return an


def add_assessment(session: Session, call: Call, analysis: Analysis, *, score: float, fatal: bool = False,
                   tier: str | None = None, calibration_sample: bool = False) -> Assessment:
    a = Assessment(call_id=call.id, analysis_id=analysis.id, score=score, fatal=fatal, tier=tier,
                   policy_sha256=POLICY_SHA, calibration_sample=calibration_sample)
    session.add(a)
    session.flush()
    return a


def add_review(session: Session, call: Call, assessment: Assessment, *, tier: str = "T2", reason: str = "flagged",
               status: str = "closed", verdict: str | None = "fail", reviewer: str = "insp01",
               due_at: datetime | None = None, closed_at: datetime | None = None,
               decisions: dict[int, str] | None = None, comment: str | None = None) -> ReviewItem:
    """``decisions``: finding id -> confirmed | rejected | added."""
    base = call.started_at or DAY0
    item = ReviewItem(call_id=call.id, assessment_id=assessment.id, tier=tier, reason=reason, status=status,
                      due_at=due_at or base + timedelta(days=1), verdict=verdict if status != "open" else None,
                      closed_by=reviewer if status == "closed" else None,
                      closed_at=(closed_at or base + timedelta(hours=5)) if status == "closed" else None,
                      comment=comment)
    session.add(item)
    session.flush()
    for finding_id, decision in (decisions or {}).items():
        session.add(ReviewDecision(review_item_id=item.id, finding_id=finding_id, decision=decision,
                                   reviewer=reviewer, comment=f"{decision}，已核对", created_at=base + timedelta(hours=4)))
    session.flush()
    return item


def add_user(session: Session, username: str, role: str, *, active: bool = True) -> User:
    user = User(username=username, role=role, password_hash="x", active=active)
    session.add(user)
    session.flush()
    return user


# --- a synthetic call center in bulk -----------------------------------------------------------

AGENTS = {"A001": "理财一组", "A002": "理财一组", "A003": "信贷二组", "A004": "信贷二组", "A005": "信用卡中心"}
RULES = [  # rule_id, category, severity
    ("R-GREET-01", "greeting.missing", "minor"),
    ("R-RISK-01", "disclosure.risk_missing", "fatal"),
    ("R-PROMISE-01", "promise.guaranteed_return", "fatal"),
    ("R-SUPER-01", "misrep.superlative", "major"),
    ("R-PII-01", "pii.sensitive_number_spoken", "fatal"),
    ("R-CLOSE-01", "closing.missing", "minor"),
]
MISSED = ("disclosure.risk_missing", "promise.misleading_return", "service.impatience")  # added by inspectors
LINES = [
    ("agent", "您好，这里是某某银行理财中心，我是客户经理小王。"),
    ("customer", "你好，我想问一下那个理财产品。"),
    ("agent", "这款产品保本保息，年化收益率百分之四点五，是我们最好的产品。"),
    ("customer", "我的手机号是幺三八幺二三四五六七八，身份证11010519491231002X。"),
    ("agent", "好的，本金5000元，2026年11月2日起息。"),
]


@dataclass(frozen=True)
class Seeded:
    calls: int
    failed: int
    findings: int
    reviewed_findings: int
    confirmed: int
    days: int


def seed_calls(session: Session, n: int, *, seed: int = 7, days: int = 5, start: datetime = DAY0,
               with_transcripts: bool = True) -> Seeded:
    """``n`` calls over ``days`` days with transcripts, findings, classifier scores,
    assessments and reviews (bulk inserts: thousands of calls in seconds). About 5 % failed,
    the rest routed; flagged calls get a review item, some closed with per-finding decisions,
    and a calibration sample of clean calls is reviewed too."""
    rng = random.Random(seed)
    base_id = (session.query(Call.id).order_by(Call.id.desc()).limit(1).scalar() or 0) + 1
    calls, transcripts, utts, analyses, findings, scores, assessments, items, decisions = ([] for _ in range(9))
    next_ids = {name: (session.query(model.id).order_by(model.id.desc()).limit(1).scalar() or 0) + 1
                for name, model in (("tr", Transcript), ("an", Analysis), ("fi", Finding), ("as", Assessment),
                                    ("ri", ReviewItem))}
    failed = reviewed = confirmed = 0
    agents = list(AGENTS)
    for k in range(n):
        cid = base_id + k
        agent = agents[k % len(agents)]
        started = start + timedelta(days=rng.randrange(days), minutes=rng.randint(0, 600))
        is_failed = rng.random() < 0.05
        failed += is_failed
        calls.append(dict(id=cid, call_id=f"C{cid:07d}", recording_sha256=sha(f"rec{cid}"),
                          file_path=f"/data/C{cid:07d}.wav", file_size=48000, audio_format="wav", agent_id=agent,
                          team=AGENTS[agent], started_at=started, duration_s=round(rng.uniform(60, 600), 1),
                          status="failed" if is_failed else "routed",
                          error_code="audio.corrupt" if is_failed else None,
                          error_message="cannot decode" if is_failed else None, extra={},
                          channel_layout="stereo-agent-left", roles_inferred=False))
        if is_failed:
            continue
        tr_id = next_ids["tr"] + len(transcripts)
        transcripts.append(dict(id=tr_id, call_id=cid, asr_model="base", asr_sha256=ASR_SHA, options={},
                                options_sha256=sha("base"), is_current=True, features={}))
        if with_transcripts:
            for idx, (role, text) in enumerate(LINES):
                utts.append(dict(transcript_id=tr_id, call_id=cid, idx=idx, role=role, start_s=idx * 4.0,
                                 end_s=idx * 4.0 + 3.5, text=text, role_inferred=False))
        an_id = next_ids["an"] + len(analyses)
        analyses.append(dict(id=an_id, call_id=cid, transcript_id=tr_id, rule_pack_name="finance-zh",
                             rule_pack_version="1.2.0", rule_pack_sha256=PACK_SHA, classifiers_sha256=MODEL_SHA,
                             is_current=True, score=None, scorecard={}))
        hits = rng.sample(RULES, k=rng.choice([0, 0, 1, 1, 2, 3]))
        fids = []
        for rule_id, category, severity in hits:
            fid = next_ids["fi"] + len(findings)
            fids.append(fid)
            line = rng.randrange(len(LINES))
            findings.append(dict(id=fid, analysis_id=an_id, call_id=cid, source="rule", rule_id=rule_id,
                                 category=category, severity=severity, role=LINES[line][0], start_s=line * 4.0,
                                 end_s=line * 4.0 + 3.5, matched_text=LINES[line][1][:12],
                                 evidence=LINES[line][1], utterance_idx=[line], details={}))
        risk = rng.random()
        scores.append(dict(analysis_id=an_id, call_id=cid, model_name="complaint_risk", model_version="0.3.1",
                           model_sha256=MODEL_SHA, label="high" if risk > 0.8 else "low", probability=round(risk, 3),
                           probabilities={}))
        fatal = any(h[2] == "fatal" for h in hits)
        tier = "T1" if fatal else "T2" if any(h[2] == "major" for h in hits) else "T3" if hits else None
        score = max(0.0, 100 - sum({"fatal": 40, "major": 15, "minor": 5}[h[2]] for h in hits) - rng.randint(0, 10))
        as_id = next_ids["as"] + len(assessments)
        calibration = tier is None and rng.random() < 0.2
        assessments.append(dict(id=as_id, call_id=cid, analysis_id=an_id, score=score, fatal=fatal, tier=tier,
                                reasons=[], policy={}, policy_sha256=POLICY_SHA, calibration_sample=calibration,
                                is_current=True))
        if tier is None and not calibration:
            continue
        ri_id = next_ids["ri"] + len(items)
        closed = rng.random() < 0.7
        due = started + timedelta(hours={"T1": 4, "T2": 24, "T3": 72}.get(tier, 72))
        verdict = None
        closed_at = started + timedelta(hours=rng.choice([1, 2, 3, 6, 20, 30, 80])) if closed else None
        if closed:
            missed = calibration and rng.random() < 0.1
            verdict = "fail" if (fatal or missed) else "pass"
            if missed:  # the inspector adds the finding the rules missed
                fid = next_ids["fi"] + len(findings)
                category = rng.choice(MISSED)
                findings.append(dict(id=fid, analysis_id=None, call_id=cid, source="inspector",
                                     rule_id=f"inspector:{category}", category=category, severity="major",
                                     role="agent", start_s=8.0, end_s=11.5, matched_text=None,
                                     evidence="客户经理未提示风险", utterance_idx=[], details={}))
                decisions.append(dict(review_item_id=ri_id, finding_id=fid, decision="added", reviewer="insp01",
                                      comment="漏检", created_at=closed_at))
            for fid in fids:
                ok = rng.random() < 0.75
                reviewed += 1
                confirmed += ok
                decisions.append(dict(review_item_id=ri_id, finding_id=fid, decision="confirmed" if ok else "rejected",
                                      reviewer="insp01", comment="客户手机13812345678已核对" if ok else "误报",
                                      created_at=closed_at))
        items.append(dict(id=ri_id, call_id=cid, assessment_id=as_id, tier=tier or "T3",
                          reason="calibration" if calibration else "flagged",
                          status="closed" if closed else "open", priority=0.0, due_at=due,
                          closed_by="insp01" if closed else None,
                          closed_at=closed_at, verdict=verdict,
                          final_score=score if closed else None))
    for model, rows in ((Call, calls), (Transcript, transcripts), (UtteranceRow, utts), (Analysis, analyses),
                        (Finding, findings), (ClassifierScore, scores), (Assessment, assessments),
                        (ReviewItem, items), (ReviewDecision, decisions)):
        for i in range(0, len(rows), 2000):
            session.execute(insert(model), rows[i:i + 2000])
    session.flush()
    return Seeded(calls=n, failed=failed, findings=len(findings), reviewed_findings=reviewed,
                  confirmed=confirmed, days=days)


# --- review items ------------------------------------------------------------------------------

def analyzed_call(session: Session, call_id: str, findings: list[tuple[str, str, str]] = (),
                  *, agent_id: str = "A001", risk: float | None = None, analysis_score: float | None = None) -> Call:
    """A call with a current analysis; ``findings`` are (rule_id, category, severity)."""
    call = Call(call_id=call_id, recording_sha256=sha(call_id), file_path=f"/rec/{call_id}.wav", file_size=1,
                agent_id=agent_id, status="analyzed")
    session.add(call)
    session.flush()
    transcript = Transcript(call_id=call.id, asr_model="base", asr_sha256=sha("asr"), options_sha256=sha("o"))
    session.add(transcript)
    session.flush()
    analysis = Analysis(call_id=call.id, transcript_id=transcript.id, rule_pack_name="finance-zh",
                        rule_pack_version="1", rule_pack_sha256=sha("pack"), score=analysis_score)
    session.add(analysis)
    session.flush()
    for n, (rule_id, category, severity) in enumerate(findings):
        session.add(Finding(analysis_id=analysis.id, call_id=call.id, source="rule", rule_id=rule_id,
                            category=category, severity=severity, role="agent", start_s=10.0 * n,
                            end_s=10.0 * n + 3, matched_text="保本保息", evidence="我们这个产品保本保息"))
    if risk is not None:
        session.add(ClassifierScore(analysis_id=analysis.id, call_id=call.id, model_name="complaint_risk",
                                    model_version="1", model_sha256=sha("m"), label="complaint",
                                    probability=risk, probabilities={"complaint": risk, "none": 1 - risk}))
    session.flush()
    return call


QUEUE_TEAMS = ("信用卡一组", "信用卡二组", "消费贷组", "财富管理组", "催收一组", "催收二组", "支付组", "账户安全组")
QUEUE_CATEGORIES = ("greeting.missing", "disclosure.risk_missing", "conduct.insult", "pii.credential_request",
                    "conduct.threat", "complaint.escalation_threat", "closing.missing", "promise.guaranteed_return")


def seed_queue(engine: Engine, n: int, *, tiers: tuple[str, ...] = ("T1", "T2", "T3"), batch: int = 5000,
               due: Callable[[int], datetime] = lambda i: T0 + timedelta(minutes=i % 997),
               findings_per_item: int = 0, agents: int = 200) -> None:
    """``n`` open review items (with the calls, analyses and assessments they hang on),
    inserted in bulk; item ``i`` is due at ``due(i)``. Calls spread over ``agents`` agents,
    the teams of :data:`QUEUE_TEAMS` and thirty days; with ``findings_per_item`` each
    analysis gets that many rule findings of :data:`QUEUE_CATEGORIES`."""
    severities = ("fatal", "major", "minor")
    finding_id = 0
    with engine.begin() as conn:
        for start in range(0, n, batch):
            idx = range(start, min(n, start + batch))
            conn.execute(insert(Call), [dict(id=i + 1, call_id=f"Q{i:07d}", recording_sha256=sha(f"Q{i}"),
                                             file_path="/x", file_size=1, status="routed", extra={},
                                             agent_id=f"A{i % agents:04d}", team=QUEUE_TEAMS[i % len(QUEUE_TEAMS)],
                                             started_at=T0 - timedelta(minutes=(i * 7) % (30 * 1440)),
                                             business_line="collection" if i % 3 == 0 else "credit_card",
                                             channel_layout="stereo-agent-left", roles_inferred=False)
                                        for i in idx])
            conn.execute(insert(Transcript), [dict(id=i + 1, call_id=i + 1, asr_model="base", asr_sha256="a",
                                                   options_sha256="o", options={}, features={}, is_current=True)
                                              for i in idx])
            conn.execute(insert(Analysis), [dict(id=i + 1, call_id=i + 1, transcript_id=i + 1, rule_pack_name="p",
                                                 rule_pack_version="1", rule_pack_sha256="s", classifiers_sha256="",
                                                 is_current=True, scorecard={}) for i in idx])
            if findings_per_item:
                rows = []
                for i in idx:
                    for k in range(findings_per_item):
                        finding_id += 1
                        rows.append(dict(id=finding_id, analysis_id=i + 1, call_id=i + 1, source="rule",
                                         rule_id=f"rule-{(i + k) % len(QUEUE_CATEGORIES)}",
                                         category=QUEUE_CATEGORIES[(i * 3 + k) % len(QUEUE_CATEGORIES)],
                                         severity=severities[(i + k) % 3], role="agent", utterance_idx=[],
                                         details={}))
                conn.execute(insert(Finding), rows)
            conn.execute(insert(Assessment), [dict(id=i + 1, call_id=i + 1, analysis_id=i + 1, score=90.0,
                                                   fatal=False, tier=tiers[i % len(tiers)], reasons=[], policy={},
                                                   policy_sha256="p", calibration_sample=False, is_current=True)
                                              for i in idx])
            conn.execute(insert(ReviewItem), [dict(id=i + 1, call_id=i + 1, assessment_id=i + 1,
                                                   tier=tiers[i % len(tiers)], reason="flagged", status="open",
                                                   priority=0.0, due_at=due(i))
                                              for i in idx])
    if engine.dialect.name == "postgresql":
        # Explicit ids leave the sequences behind; later ORM inserts must not collide.
        with engine.begin() as conn:
            for table in ("calls", "transcripts", "analyses", "assessments", "review_items", "findings"):
                conn.exec_driver_sql(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                                     f"GREATEST((SELECT MAX(id) FROM {table}), 1))")
            conn.exec_driver_sql("ANALYZE")
    else:
        with engine.begin() as conn:
            conn.exec_driver_sql("ANALYZE")


# --- a hostile corpus: recordings of every kind of damage, and odd but valid ones ------------

def _wav_bytes(samples, rate: int = 8000, subtype: str = "PCM_16", fmt: str = "WAV") -> bytes:
    import io

    import numpy as np
    import soundfile as sf

    buf = io.BytesIO()
    sf.write(buf, np.asarray(samples, dtype=np.float32) if subtype not in ("DOUBLE",) else np.asarray(samples),
             rate, subtype=subtype, format=fmt)
    return buf.getvalue()


def _patched(data: bytes, offset: int, fmt: str, value: int) -> bytes:
    import struct

    out = bytearray(data)
    struct.pack_into(fmt, out, offset, value)
    return bytes(out)


def make_hostile_corpus(folder: Path, speech: Path) -> tuple[dict[str, str], set[str]]:
    """About 70 recordings in ``folder``: damaged ones, each with the error code it must get
    (name -> code), and odd but valid ones that must go through the whole pipeline (names).
    ``speech`` is a real two-party WAV (a sample call) that some files are made from."""
    import numpy as np
    import soundfile as sf

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(20261201)
    bad: dict[str, str] = {}
    good: set[str] = set()

    def put(name: str, data: bytes, code: str | None) -> None:
        (folder / name).write_bytes(data)
        if code is None:
            good.add(name)
        else:
            bad[name] = code

    t = np.arange(8000 * 5) / 8000
    voice = (0.3 * np.sin(2 * np.pi * 220 * t) * (0.5 + 0.5 * np.sin(2 * np.pi * 3 * t))).astype(np.float32)
    pcm = _wav_bytes(voice)
    real = speech.read_bytes()
    real_audio, real_rate = sf.read(str(speech), dtype="float32")

    # damaged: the container
    put("empty_0_bytes.wav", b"", "audio.empty")
    put("trunc_10b.wav", pcm[:10], "audio.corrupt")
    put("trunc_header44.wav", pcm[:44], "audio.truncated")
    for n, cut in enumerate((0.1, 0.3, 0.5, 0.7, 0.9)):
        put(f"trunc_{n}.wav", real[:int(len(real) * cut)], "audio.truncated")
    put("hdr_datasize_huge.wav", _patched(pcm, 40, "<I", 0x7FFFFF00), "audio.truncated")
    put("random_bytes.wav", rng.bytes(20_000), "audio.corrupt")
    put("text_named_wav.wav", "不是音频文件".encode() * 500, "audio.corrupt")
    put("riff_without_wave.wav", b"RIFF" + pcm[4:8] + b"JUNK" + pcm[12:], "audio.corrupt")
    put("hdr_channels_0.wav", _patched(pcm, 22, "<H", 0), "audio.corrupt")
    put("hdr_formattag_unknown.wav", _patched(pcm, 20, "<H", 0x7777), "audio.corrupt")
    # damaged: the header's numbers (checked before anything is decoded)
    put("hdr_rate_2g.wav", _patched(pcm, 24, "<I", 0x7FFFFFFF), "audio.sample_rate")
    put("hdr_rate_1hz.wav", _patched(_wav_bytes(rng.standard_normal(14000) * 0.3, 8000), 24, "<I", 1),
        "audio.sample_rate")
    put("hdr_rate_1000.wav", _patched(pcm, 24, "<I", 1000), "audio.sample_rate")
    put("hdr_rate_500k.wav", _patched(pcm, 24, "<I", 500_000), "audio.sample_rate")
    put("eight_channels.wav", _wav_bytes(np.stack([voice] * 8, axis=1)), "audio.channels")
    put("three_channels.wav", _wav_bytes(np.stack([voice] * 3, axis=1)), "audio.channels")
    # damaged: the samples
    nan = voice.copy()
    nan[100:110] = np.nan
    put("nan.wav", _wav_bytes(nan, subtype="FLOAT"), "audio.nan")
    inf = voice.copy()
    inf[500] = np.inf
    put("inf.wav", _wav_bytes(inf, subtype="FLOAT"), "audio.nan")
    put("float_loud_1e6.wav", _wav_bytes(voice * 1e6, subtype="FLOAT"), "audio.out_of_range")
    put("silent.wav", _wav_bytes(np.zeros(16000)), "audio.silent")
    put("too_long.wav", _wav_bytes(np.tile(voice, 13) * 0.1), "audio.too_long")  # 65 s, over the test limit
    # damaged: compressed formats
    mp3 = _wav_bytes(real_audio, real_rate, subtype="MPEG_LAYER_III", fmt="MP3")
    put("mp3_truncated.mp3", mp3[:len(mp3) // 5], "audio.truncated")
    garbage = bytearray(mp3)
    garbage[len(mp3) // 4:len(mp3) // 2] = rng.bytes(len(mp3) // 2 - len(mp3) // 4)
    put("mp3_garbage_frames.mp3", bytes(garbage), "audio.corrupt")
    put("mp3_random.mp3", rng.bytes(30_000), "audio.corrupt")
    put("mp3_id3_only.mp3", b"ID3\x03\x00\x00\x00\x00\x00\x10" + b"\x00" * 16, "audio.corrupt")
    ogg = _wav_bytes(voice, 8000, subtype="VORBIS", fmt="OGG")
    put("ogg_truncated.ogg", ogg[:len(ogg) // 3], "audio.corrupt")
    put("ogg_corrupt.ogg", ogg[:200] + rng.bytes(len(ogg) - 200), "audio.corrupt")
    cut = ogg.rfind(b"OggS")  # cut exactly before the last page: no end-of-stream page
    put("ogg_no_end_page.ogg", ogg[:cut], "audio.truncated")
    flac = _wav_bytes(voice, 8000, fmt="FLAC")
    put("flac_truncated.flac", flac[:len(flac) // 2], "audio.corrupt")
    put("flac_corrupt.flac", flac[:100] + rng.bytes(len(flac) - 100), "audio.corrupt")
    # damaged: the name
    put("flac_named_wav.wav", flac, "audio.wrong_extension")
    put("wav_named_mp3.mp3", _wav_bytes(voice * 0.9), "audio.wrong_extension")
    put("wav_named_ogg.ogg", _wav_bytes(voice * 0.8), "audio.wrong_extension")
    # not regular files
    (folder / "link_to_dev_null.wav").symlink_to("/dev/null")
    bad["link_to_dev_null.wav"] = "audio.not_a_file"
    (folder / "loop_a.wav").symlink_to(folder / "loop_b.wav")
    (folder / "loop_b.wav").symlink_to(folder / "loop_a.wav")
    bad["loop_a.wav"] = bad["loop_b.wav"] = "audio.not_a_file"

    # odd but valid: every one goes through the pipeline (many have no speech at all)
    put("real_call.wav", real, None)
    put("real_call.mp3", mp3, None)
    put("real_call.flac", _wav_bytes(real_audio, real_rate, fmt="FLAC"), None)
    put("real_call.ogg", _wav_bytes(real_audio, real_rate, subtype="VORBIS", fmt="OGG"), None)
    for subtype in ("ALAW", "ULAW", "FLOAT", "PCM_24", "PCM_32", "PCM_U8", "MS_ADPCM", "IMA_ADPCM", "GSM610"):
        put(f"enc_{subtype.lower()}.wav", _wav_bytes(voice * (0.5 + 0.05 * len(good)), subtype=subtype), None)
    put("enc_double.wav", _wav_bytes(voice.astype(np.float64) * 0.7, subtype="DOUBLE"), None)
    put("rate_192k_stereo.wav", _wav_bytes(np.stack([np.resize(voice, 192000)] * 2, axis=1) * 0.4, 192000), None)
    put("rate_4k_mono.wav", _wav_bytes(voice[::2] * 0.6, 4000), None)
    put("white_noise_10s.wav", _wav_bytes(rng.standard_normal(80000) * 0.2), None)
    put("pure_tone_1khz.wav", _wav_bytes(0.5 * np.sin(2 * np.pi * 1000 * np.arange(80000) / 8000)), None)
    music = sum(0.1 * np.sin(2 * np.pi * f * np.arange(80000) / 8000) for f in (262, 330, 392, 523))
    put("hold_music.wav", _wav_bytes(music), None)
    put("quiet_noise_m50db.wav", _wav_bytes(rng.standard_normal(40000) * 0.003), None)
    put("one_sample.wav", _wav_bytes(np.array([0.5])), None)
    put("ten_ms.wav", _wav_bytes(voice[:80]), None)
    put("clipping_x50.wav", _wav_bytes(np.clip(voice * 50, -1, 1)), None)
    put("dc_offset.wav", _wav_bytes(voice * 0.5 + 0.4), None)
    put("one_channel_silent.wav", _wav_bytes(np.stack([voice, np.zeros_like(voice)], axis=1)), None)
    put("name with spaces 和中文.wav", _wav_bytes(voice * 0.35), None)
    put("hdr_riffsize_wrong.wav", _patched(_wav_bytes(voice * 0.45), 4, "<I", 12), None)
    put("rf64.wav", _wav_bytes(voice * 0.55, fmt="RF64"), None)
    return bad, good
