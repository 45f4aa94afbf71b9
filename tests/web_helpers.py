"""A small call center for the web tests, built through the real library path where it
matters: recordings are ingested from ``audio_samples/`` (real WAV files), transcripts and
findings are inserted as the transcribe/analyze stages would store them (no Whisper here: too
slow), and :func:`qa.review.routing.score_and_route` creates the review items."""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

from argon2 import PasswordHasher
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from qa.ingest.register import IngestOptions, ingest, read_manifest
from qa.review import users
from qa.review.routing import TierPolicy, score_and_route
from qa.storage import write_session
from qa.storage.models import Analysis, Call, ClassifierScore, Finding, ReviewItem, Transcript, UtteranceRow

SAMPLES = Path(__file__).resolve().parent.parent / "audio_samples"
PASSWORD = "correct-horse-battery"
# username -> (role, display name)
PEOPLE = {
    "zhangmin": ("inspector", "张敏"),
    "liqiang": ("inspector", "李强"),
    "wangfang": ("senior", "王芳"),
    "chenjing": ("senior", "陈静"),
    "zhaolei": ("auditor", "赵磊"),
    "root": ("admin", "管理员"),
}
# A mobile number the T2 call's customer reads out: shown masked unless raw text is asked for.
PHONE = "13812345678"
CSRF_RE = re.compile(r'name="csrf_token" value="([^"]+)"')
# Cheap argon2 parameters for the tests: at the default cost (~0.4 s per hash on a small
# machine) every login would dominate the run; the tests are about the flow, not the cost.
FAST_HASHER = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)


@dataclass(frozen=True)
class World:
    t1_item: int
    t2_item: int
    t1_call: int  # calls.id
    t2_call: int
    failed_call: int
    unrouted_call: int  # ingested, never analyzed: no review item
    t1_findings: tuple[int, ...]  # in time order
    t2_findings: tuple[int, ...]
    t1_wav: Path


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _turns(call_id: str) -> list[dict]:
    return json.loads((SAMPLES / "calls" / f"{call_id}.json").read_text(encoding="utf-8"))["turns"]


def _analyze(session: Session, call: Call, turns: list[dict], findings: list[dict], risk: float) -> list[int]:
    """Store a transcript and an analysis the way the pipeline stages do; ``findings`` name
    the utterance they cite (``utt``) and the phrase that matched."""
    transcript = Transcript(call_id=call.id, asr_model="base", asr_sha256=_sha("whisper-base"), options={},
                            options_sha256=_sha("opts"), is_current=True)
    transcript.utterances = [UtteranceRow(call_id=call.id, idx=i, role=t["role"], start_s=t["start_s"],
                                          end_s=t["end_s"], text=t["text"]) for i, t in enumerate(turns)]
    session.add(transcript)
    session.flush()
    analysis = Analysis(call_id=call.id, transcript_id=transcript.id, rule_pack_name="finance-zh",
                        rule_pack_version="1.0.0", rule_pack_sha256=_sha("pack"), classifiers_sha256=_sha("clf"))
    session.add(analysis)
    session.flush()
    rows = []
    for f in findings:
        utt = turns[f["utt"]]
        row = Finding(analysis_id=analysis.id, call_id=call.id, source="rule", rule_id=f["rule_id"],
                      category=f["category"], severity=f["severity"], role="agent", start_s=utt["start_s"],
                      end_s=utt["end_s"], matched_text=f["matched"], evidence=f"[{f['utt']}] agent: {utt['text']}",
                      utterance_idx=[f["utt"]], details={"title": f["title"]})
        session.add(row)
        rows.append(row)
    session.add(ClassifierScore(analysis_id=analysis.id, call_id=call.id, model_name="complaint_risk",
                                model_version="0.3.1", model_sha256=_sha("model"), label="complaint",
                                probability=risk, probabilities={"complaint": risk, "none": round(1 - risk, 3)}))
    call.status = "analyzed"
    session.flush()
    return [r.id for r in rows]


def build_world(factory: sessionmaker[Session], tmp_path: Path) -> World:
    with write_session(factory) as session:
        for username, (role, name) in PEOPLE.items():
            users.create_user(session, "test", username, role, PASSWORD, name)
        session.commit()

        wanted = {"S06", "S08", "S02"}
        recordings = [r for r in read_manifest(SAMPLES / "manifest.csv") if r.meta.call_id in wanted]
        bad = tmp_path / "broken.wav"
        bad.write_bytes(b"")
        from qa.domain import CallMeta
        from qa.ingest.register import Recording
        recordings.append(Recording(path=bad, meta=CallMeta(call_id="BROKEN1"), source="test"))
        report = ingest(session, recordings, IngestOptions())
        assert len(report.registered) == 3 and len(report.failed) == 1, report.outcomes
        calls = {c.call_id: c for c in session.scalars(select(Call))}

        t1_findings = _analyze(session, calls["S06"], _turns("S06"), [
            dict(utt=2, rule_id="promise.guaranteed_return.v1", category="promise.guaranteed_return",
                 severity="fatal", matched="保本保息；稳赚不赔", title="承诺保本保息"),
            dict(utt=4, rule_id="misrep.superlative.v1", category="misrep.superlative", severity="major",
                 matched="最好", title="绝对化用语"),
        ], risk=0.42)
        turns = _turns("S08")
        turns[3] = dict(turns[3], text=f"利息多少？我手机是{PHONE}。")
        t2_findings = _analyze(session, calls["S08"], turns, [
            dict(utt=2, rule_id="loan.approval_promise.v1", category="loan.approval_promise", severity="major",
                 matched="百分之百能批", title="承诺必批"),
        ], risk=0.2)
        policy = TierPolicy()
        score_and_route(session, policy, call_pks=[calls["S06"].id])
        # Routed 30 hours ago with a 24-hour SLA: the T2 item is overdue.
        score_and_route(session, policy, call_pks=[calls["S08"].id],
                        now=datetime.now(timezone.utc) - timedelta(hours=30))
        session.commit()
        items = {session.get(Call, i.call_id).call_id: i for i in session.scalars(select(ReviewItem))}
        assert items["S06"].tier == "T1" and items["S08"].tier == "T2", {k: v.tier for k, v in items.items()}
        return World(t1_item=items["S06"].id, t2_item=items["S08"].id, t1_call=calls["S06"].id,
                     t2_call=calls["S08"].id, failed_call=calls["BROKEN1"].id, unrouted_call=calls["S02"].id,
                     t1_findings=tuple(t1_findings), t2_findings=tuple(t2_findings),
                     t1_wav=Path(calls["S06"].file_path))


def csrf_of(html: str) -> str:
    match = CSRF_RE.search(html)
    assert match, "page has no CSRF token"
    return match.group(1)


def login(client, username: str, password: str = PASSWORD):
    """Log ``client`` (a TestClient) in; returns the response after the redirect."""
    page = client.get("/login")
    return client.post("/login", data={"username": username, "password": password, "csrf_token": csrf_of(page.text)},
                       follow_redirects=True)


_TEMPLATE: dict[str, tuple[Path, World]] = {}


def world_database(template_dir: Path, target_dir: Path) -> tuple[str, World]:
    """A fresh SQLite copy of the world in ``target_dir``; the world itself is built once per
    test session in ``template_dir`` (password hashing and ingest are the slow parts)."""
    import shutil

    from qa import storage as db

    if "world" not in _TEMPLATE:
        url = f"sqlite:///{template_dir / 'world.db'}"
        db.upgrade(url)
        engine = db.make_engine(url)
        world = build_world(db.session_factory(engine), template_dir)
        engine.dispose()  # the last connection checkpoints the WAL into the file
        _TEMPLATE["world"] = (template_dir / "world.db", world)
    path, world = _TEMPLATE["world"]
    target_dir.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(path, target_dir / "qa.db")
    return f"sqlite:///{target_dir / 'qa.db'}", world
