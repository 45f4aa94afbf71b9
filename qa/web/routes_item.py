"""The call view of one review item: metadata, score, classifier scores, findings with their
decisions, the transcript with evidence highlighted, the recording; and the reviewer's
actions on it (decide, add a missed finding, close). Audio is served here too."""

from __future__ import annotations

import logging
import mimetypes
from dataclasses import dataclass
from pathlib import Path

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import FileResponse, RedirectResponse
from sqlalchemy import select
from sqlalchemy.orm import Session

from .. import review
from ..errors import NotFound, PermissionDenied
from ..permissions import can
from ..redact import redact
from ..review.users import can_view_raw_text, record_raw_text_view
from ..storage.models import Analysis, Call, Finding, ReviewItem, Transcript, UtteranceRow
from .auth import actor_of, current_user, get_db, require
from .forms import optional_float
from .render import render

log = logging.getLogger(__name__)
router = APIRouter()

AUDIO_TYPES = {".wav": "audio/wav", ".mp3": "audio/mpeg", ".flac": "audio/flac", ".ogg": "audio/ogg",
               ".opus": "audio/ogg", ".m4a": "audio/mp4"}
SEVERITY_ORDER = {"fatal": 0, "major": 1, "minor": 2}


@dataclass(frozen=True)
class Segment:
    text: str
    evidence: bool


@dataclass(frozen=True)
class UtteranceView:
    idx: int
    role: str
    start_s: float
    end_s: float
    segments: tuple[Segment, ...]
    finding_ids: tuple[int, ...]
    severity: str | None  # the worst severity among the findings that cite it


def _evidence_spans(raw: str, phrases: list[str]) -> list[tuple[int, int]]:
    spans = []
    for phrase in phrases:
        start = raw.find(phrase)
        while phrase and start >= 0:
            spans.append((start, start + len(phrase)))
            start = raw.find(phrase, start + len(phrase))
    return sorted(spans)


def _segments(raw: str, shown: str, phrases: list[str]) -> tuple[Segment, ...]:
    """Cut ``shown`` (the raw or the redacted text: masking keeps lengths, so offsets found in
    the raw text are valid in both) into plain and evidence pieces."""
    marks = [False] * len(shown)
    for start, end in _evidence_spans(raw, phrases):
        for i in range(start, min(end, len(shown))):
            marks[i] = True
    pieces: list[Segment] = []
    for ch, mark in zip(shown, marks):
        if pieces and pieces[-1].evidence == mark:
            pieces[-1] = Segment(pieces[-1].text + ch, mark)
        else:
            pieces.append(Segment(ch, mark))
    return tuple(pieces)


def _phrases(finding: Finding) -> list[str]:
    # The rule engine joins several matched phrases with a full-width semicolon.
    return [p for p in (finding.matched_text or "").split("；") if p.strip()]


def _cites(finding: Finding, utt: UtteranceRow) -> bool:
    if finding.utterance_idx:
        return utt.idx in {int(i) for i in finding.utterance_idx}
    if finding.start_s is None:
        return False
    end = finding.end_s if finding.end_s is not None else finding.start_s
    return utt.start_s <= end and utt.end_s >= finding.start_s and finding.role in (None, utt.role)


def transcript_view(utterances: list[UtteranceRow], findings: list[Finding], raw: bool) -> list[UtteranceView]:
    views = []
    for utt in utterances:
        citing = [f for f in findings if _cites(f, utt)]
        phrases = [p for f in citing for p in _phrases(f)]
        shown = utt.text if raw else redact(utt.text).text
        worst = min((f.severity for f in citing), key=lambda s: SEVERITY_ORDER.get(s, 9), default=None)
        views.append(UtteranceView(utt.idx, utt.role, utt.start_s, utt.end_s, _segments(utt.text, shown, phrases),
                                   tuple(f.id for f in citing), worst))
    return views


def _text(value: str | None, raw: bool) -> str | None:
    return value if raw or value is None else redact(value).text


@router.get("/items/{item_id}")
def item_page(request: Request, item_id: int, user=Depends(require("item.view")), db: Session = Depends(get_db)):
    return _item_view(request, review.get_item(db, item_id), user, db, raw=False)


@router.post("/items/{item_id}/raw")
def item_page_raw(request: Request, item_id: int, user=Depends(require("transcript.raw")),
                  db: Session = Depends(get_db)):
    """The unmasked page: a POST (with its CSRF token), so that no link or cross-site
    navigation can write the audit event; audited before anything unmasked is rendered."""
    detail = review.get_item(db, item_id)
    record_raw_text_view(db, user.username, user.role, detail.call)
    db.commit()
    return _item_view(request, detail, user, db, raw=True)


def _item_view(request: Request, detail, user, db: Session, *, raw: bool):
    analysis = db.get(Analysis, detail.assessment.analysis_id)
    utterances = list(db.scalars(select(UtteranceRow).where(UtteranceRow.transcript_id == analysis.transcript_id)
                                 .order_by(UtteranceRow.idx)))
    transcript = db.get(Transcript, analysis.transcript_id)
    findings = [v.finding for v in detail.findings]
    mine = {v.finding.id: next((d for d in v.decisions if d.reviewer == user.username), None)
            for v in detail.findings}
    item = detail.item
    open_appeal = next((a for a in detail.appeals if a.status == "open"), None)
    return render(
        request, "item.html", detail=detail, item=item, call=detail.call, assessment=detail.assessment,
        analysis=analysis, transcript=transcript, scores=sorted(analysis.scores, key=lambda s: s.model_name),
        utterances=transcript_view(utterances, findings, raw), mine=mine, raw=raw,
        can_raw=can_view_raw_text(user.role), text=lambda v: _text(v, raw),
        working=item.status == "claimed" and item.claimed_by == user.username,
        can_claim=can(user.role, "review.work") and item.status == "open",
        can_open_appeal=can(user.role, "appeal.view") and item.status == "closed" and item.verdict == "fail",
        open_appeal=open_appeal,
        can_decide_appeal=(can(user.role, "appeal.decide") and item.closed_by != user.username
                           and open_appeal is not None and open_appeal.opened_by != user.username),
        categories=review.categories(), severities=("fatal", "major", "minor"),
    )


def _back(item_id: int, anchor: str = "") -> RedirectResponse:
    return RedirectResponse(f"/items/{item_id}{anchor}", status_code=303)


@router.post("/items/{item_id}/findings/{finding_id}/decide")
def decide(item_id: int, finding_id: int, decision: str = Form(...), comment: str = Form(""),
           user=Depends(require("review.work")), db: Session = Depends(get_db)):
    review.decide(db, actor_of(user), item_id, finding_id, decision, comment.strip() or None)
    db.commit()
    return _back(item_id, f"#finding-{finding_id}")


@router.post("/items/{item_id}/findings")
def add_finding(item_id: int, category: str = Form(...), severity: str = Form(""), start_s: str = Form(""),
                end_s: str = Form(""), comment: str = Form(""),
                user=Depends(require("review.work")), db: Session = Depends(get_db)):
    finding = review.add_finding(db, actor_of(user), item_id, category=category, severity=severity or None,
                                 start_s=optional_float(start_s, "start"), end_s=optional_float(end_s, "end"),
                                 comment=comment.strip() or None)
    db.commit()
    return _back(item_id, f"#finding-{finding.id}")


@router.post("/items/{item_id}/close")
def close(request: Request, item_id: int, verdict: str = Form(""), final_score: str = Form(""),
          comment: str = Form(""), user=Depends(require("review.work")),
          db: Session = Depends(get_db)):
    review.close(db, actor_of(user), item_id, verdict=verdict or None,
                 final_score=optional_float(final_score, "final score"), comment=comment.strip() or None,
                 policy=request.app.state.review_policy)
    db.commit()
    return RedirectResponse("/queue?msg=closed", status_code=303)


@router.get("/calls/{call_pk}/audio")
def audio(call_pk: int, user=Depends(current_user), db: Session = Depends(get_db)):
    """The recording of a call, with range requests (Starlette's FileResponse answers
    ``Range`` with 206 and ``Content-Range``). The path comes from the database row, never
    from the request."""
    call = db.get(Call, call_pk)
    if call is None:
        raise NotFound(f"call {call_pk} does not exist")
    if not can(user.role, "item.view"):
        raise PermissionDenied(f"{user.username} ({user.role}) may not listen to recordings")
    if call.status == "failed":
        raise NotFound(f"call {call.call_id} failed ({call.error_code}); its recording is not available")
    if user.role == "inspector" and db.scalar(select(ReviewItem.id).where(ReviewItem.call_id == call.id)
                                              .limit(1)) is None:
        raise PermissionDenied(f"call {call.call_id} is not in the review queue; inspectors may only "
                               "listen to calls under review")
    path = Path(call.file_path)
    if not path.is_file():
        log.warning("recording of call %s missing at %s", call.call_id, path)
        raise NotFound(f"the recording of call {call.call_id} is missing from storage")
    media_type = (AUDIO_TYPES.get(path.suffix.lower()) or mimetypes.guess_type(path.name)[0]
                  or "application/octet-stream")
    return FileResponse(path, media_type=media_type, headers={"Cache-Control": "private, max-age=300"})
