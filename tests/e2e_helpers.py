"""End-to-end helpers: a small corpus of real sample calls, ``qa nightly`` in a subprocess,
and the rows a run leaves behind in a form two runs can be compared by.

Real Whisper on a small CPU takes a while per call, so the corpus is the two shortest sample
calls plus one bad file, and the rows of a clean run are computed once per test session and
shared (``clean_rows``). Every run of a session uses one snapshot of the rule pack and the
classifier models (``frozen_inputs``), so runs minutes apart compare equal even while the
working tree's rules or models are being edited."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from sqlalchemy import create_engine, func, select
from sqlalchemy.orm import Session

from qa.storage.models import (
    Analysis,
    Assessment,
    AuditEvent,
    Call,
    CallChannel,
    ClassifierScore,
    Finding,
    ReviewItem,
    Transcript,
    UtteranceRow,
)

REPO = Path(__file__).resolve().parent.parent
SAMPLES = REPO / "audio_samples"
CORPUS_CALLS = ("S08", "S04")  # the two shortest sample calls (22 s and 24 s)
QA = [sys.executable, "-c", "from qa.cli import main; main()"]
# each call decoded on its own, so every run decodes exactly the same batches and the
# transcripts of a resumed run can be compared character by character with a clean run's
RUN_ARGS = ["--workers", "2", "--calls-per-decode", "1", "--date", "2026-11-02"]


def make_corpus(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for call in CORPUS_CALLS:
        src = next(p for p in (SAMPLES / "calls").glob(f"{call}.*") if p.suffix != ".json")
        shutil.copy(src, folder / src.name)
    (folder / "broken.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVE" + os.urandom(300))
    return folder


def frozen_inputs(tmp_path_factory) -> dict[str, str]:
    """Settings pointing at a per-session copy of the rule pack and the classifier models."""
    from qa.config import Settings

    root = tmp_path_factory.getbasetemp() / "qa-frozen-inputs"
    if not root.exists():
        defaults = Settings()
        shutil.copytree(defaults.rules_pack, root / "rules")
        shutil.copytree(defaults.models_dir, root / "models")
    return {"rules_pack": str(root / "rules"), "models_dir": str(root / "models")}


def nightly(data_dir: Path, source: Path, inputs: dict[str, str], *, crash_after: str | None = None,
            timeout: float = 900) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("QA_")}
    env.update(QA_DATA_DIR=str(data_dir), QA_DATABASE_URL=f"sqlite:///{data_dir / 'qa.db'}",
               QA_RULES_PACK=inputs["rules_pack"], QA_MODELS_DIR=inputs["models_dir"])
    if crash_after:
        env["QA_TEST_CRASH_AFTER"] = crash_after
    return subprocess.run([*QA, "--log-format", "json", "nightly", "--source", str(source), *RUN_ARGS],
                          env=env, cwd=REPO, capture_output=True, text=True, timeout=timeout)


def rows(db_path: Path) -> dict:
    """Every stage's output, by call id (never by row id, which differs between databases)."""
    engine = create_engine(f"sqlite:///{db_path}")
    with Session(engine) as s:
        cid = dict(s.execute(select(Call.id, Call.call_id)).all())
        out = {
            "calls": sorted(tuple(r) for r in s.execute(select(Call.call_id, Call.status, Call.error_code))),
            "counts": {m.__tablename__: s.scalar(select(func.count()).select_from(m)) for m in
                       (Call, CallChannel, Transcript, UtteranceRow, Analysis, Finding, ClassifierScore, Assessment,
                        ReviewItem)},
            "utterances": sorted((cid[u.call_id], u.idx, u.role, u.text) for u in s.scalars(select(UtteranceRow))),
            "findings": sorted((cid[f.call_id], f.rule_id, f.category, f.severity, f.start_s)
                               for f in s.scalars(select(Finding))),
            "classifier_scores": sorted((cid[c.call_id], c.model_name, c.label, round(c.probability, 6))
                                        for c in s.scalars(select(ClassifierScore))),
            "assessments": sorted((cid[a.call_id], a.score, a.tier, a.fatal, a.calibration_sample)
                                  for a in s.scalars(select(Assessment))),
            "review_items": sorted((cid[r.call_id], r.tier, r.reason, r.status) for r in s.scalars(select(ReviewItem))),
            # who did what: row ids differ between databases, names of exports do not
            "audit_events": sorted((e.actor, e.action, e.object_type, e.object_id if e.object_type == "export" else "")
                                   for e in s.scalars(select(AuditEvent))),
        }
    engine.dispose()
    return json.loads(json.dumps(out))  # tuples -> lists, as the cached copy has them


def clean_rows(tmp_path_factory) -> dict:
    """The rows of an uninterrupted run over the corpus, computed once per test session."""
    cache = tmp_path_factory.getbasetemp() / "qa-clean-run.json"
    if cache.exists():
        return json.loads(cache.read_text(encoding="utf-8"))
    base = tmp_path_factory.mktemp("clean-run")
    result = nightly(base / "var", make_corpus(base / "calls"), frozen_inputs(tmp_path_factory))
    if result.returncode != 2:  # 2: the broken file fails, the good calls are done
        raise AssertionError(f"clean run exited {result.returncode}:\n{result.stdout}\n{result.stderr[-3000:]}")
    found = rows(base / "var" / "qa.db")
    cache.write_text(json.dumps(found, ensure_ascii=False), encoding="utf-8")
    return found
