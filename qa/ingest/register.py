"""Find recordings (a folder, or a manifest CSV/JSONL), hash them and register calls.

Identity is the sha256 of the recording's bytes: ingesting the same bytes again adds
nothing, and a ``call_id`` that arrives with different bytes is reported as a conflict,
never overwritten. A file that fails validation is registered as a ``failed`` call with
the reason, so it is accounted for and the rest of the batch goes on.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Callable, Iterable, Iterator

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from ..domain import CHANNEL_LAYOUTS, CallMeta
from ..errors import AudioError, ManifestError
from ..storage.models import Call
from . import audio

log = logging.getLogger(__name__)

MANIFEST_COLUMNS = ("call_id", "file", "agent_id", "team", "started_at", "direction", "business_line", "channel_layout")
DIRECTIONS = ("inbound", "outbound")


@dataclass(frozen=True)
class IngestOptions:
    default_channel_layout: str = "stereo-agent-left"
    max_duration_s: float = 4 * 3600.0

    def validate(self) -> None:
        if self.default_channel_layout not in CHANNEL_LAYOUTS:
            raise ValueError(f"channel layout must be one of {', '.join(CHANNEL_LAYOUTS)}, "
                             f"got {self.default_channel_layout!r}")
        if self.max_duration_s <= 0:
            raise ValueError("max_duration_s must be positive")


@dataclass(frozen=True)
class Recording:
    """One recording to ingest: where it is and what is known about it."""

    path: Path
    meta: CallMeta
    source: str  # "dir" or "manifest:<file>:<line>"


@dataclass(frozen=True)
class IngestOutcome:
    call_id: str
    path: str
    outcome: str  # registered | duplicate | conflict | failed
    detail: str = ""
    error_code: str | None = None


@dataclass
class IngestReport:
    outcomes: list[IngestOutcome] = field(default_factory=list)

    def of(self, outcome: str) -> list[IngestOutcome]:
        return [o for o in self.outcomes if o.outcome == outcome]

    @property
    def registered(self) -> list[IngestOutcome]:
        return self.of("registered")

    @property
    def failed(self) -> list[IngestOutcome]:
        return self.of("failed")

    @property
    def conflicts(self) -> list[IngestOutcome]:
        return self.of("conflict")

    @property
    def duplicates(self) -> list[IngestOutcome]:
        return self.of("duplicate")

    @property
    def ok(self) -> bool:
        return not self.failed and not self.conflicts


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def scan_directory(root: str | Path, *, channel_layout: str = "stereo-agent-left") -> list[Recording]:
    """Every file below ``root`` with an audio extension, in path order. The call id is the
    path relative to ``root`` without its extension."""
    root = Path(root)
    if not root.is_dir():
        raise ManifestError(f"{root}: not a directory", path=str(root))
    found = []
    for path in sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in audio.AUDIO_EXTENSIONS):
        call_id = path.relative_to(root).with_suffix("").as_posix()
        found.append(Recording(path=path, meta=CallMeta(call_id=call_id, channel_layout=channel_layout), source="dir"))
    return found


def _parse_time(value: str, where: str) -> datetime | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(value.strip())
    except ValueError as e:
        raise ManifestError(f"{where}: started_at {value!r} is not an ISO 8601 date-time "
                            f"(e.g. 2026-11-02T10:15:00+08:00)") from e


def _manifest_rows(path: Path) -> Iterator[tuple[int, dict[str, str]]]:
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as e:
        raise ManifestError(f"{path}: cannot read manifest: {e}", path=str(path)) from e
    if path.suffix.lower() in (".jsonl", ".ndjson"):
        for lineno, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise ManifestError(f"{path}:{lineno}: invalid JSON: {e.msg}", path=str(path)) from e
            if not isinstance(row, dict):
                raise ManifestError(f"{path}:{lineno}: each line must be a JSON object", path=str(path))
            yield lineno, {k: "" if v is None else str(v) for k, v in row.items()}
    elif path.suffix.lower() == ".csv":
        reader = csv.DictReader(text.splitlines())
        missing = {"call_id", "file"} - set(reader.fieldnames or ())
        if missing:
            raise ManifestError(f"{path}:1: header lacks required column(s) {', '.join(sorted(missing))}; "
                                f"expected {','.join(MANIFEST_COLUMNS)}", path=str(path))
        for row in reader:
            yield reader.line_num, {k: (v or "").strip() for k, v in row.items() if k is not None}
    else:
        raise ManifestError(f"{path}: manifest must be .csv or .jsonl", path=str(path))


def read_manifest(path: str | Path, *, channel_layout: str = "stereo-agent-left") -> list[Recording]:
    """Parse a manifest; file paths are relative to the manifest's folder. Every problem is
    reported with the manifest's file name and line."""
    path = Path(path)
    recordings: list[Recording] = []
    seen: dict[str, int] = {}
    for lineno, row in _manifest_rows(path):
        where = f"{path}:{lineno}"
        call_id, file = row.get("call_id", ""), row.get("file", "")
        if not call_id or not file:
            raise ManifestError(f"{where}: call_id and file are required", path=str(path))
        if call_id in seen:
            raise ManifestError(f"{where}: call_id {call_id!r} already appears on line {seen[call_id]}", path=str(path))
        seen[call_id] = lineno
        layout = row.get("channel_layout") or channel_layout
        if layout not in CHANNEL_LAYOUTS:
            raise ManifestError(f"{where}: channel_layout {layout!r} is not one of {', '.join(CHANNEL_LAYOUTS)}",
                                path=str(path))
        direction = row.get("direction") or None
        if direction is not None and direction not in DIRECTIONS:
            raise ManifestError(f"{where}: direction {direction!r} is not one of {', '.join(DIRECTIONS)}",
                                path=str(path))
        meta = CallMeta(
            call_id=call_id,
            agent_id=row.get("agent_id") or None,
            team=row.get("team") or None,
            started_at=_parse_time(row.get("started_at", ""), where),
            direction=direction,
            business_line=row.get("business_line") or None,
            channel_layout=layout,
        )
        recordings.append(Recording(path=(path.parent / file), meta=meta, source=f"manifest:{path.name}:{lineno}"))
    return recordings


def ingest_recording(session: Session, rec: Recording, options: IngestOptions) -> IngestOutcome:
    """Register one recording (the caller commits). Never raises for a bad file: the
    outcome says what happened."""
    path, call_id = rec.path, rec.meta.call_id
    if not path.is_file():
        return IngestOutcome(call_id, str(path), "failed", f"{path}: file not found", "audio.missing")
    digest = sha256_file(path)
    same_bytes = session.scalar(select(Call).where(Call.recording_sha256 == digest))
    if same_bytes is not None:
        detail = "already registered" if same_bytes.call_id == call_id else f"same bytes as call {same_bytes.call_id}"
        return IngestOutcome(call_id, str(path), "duplicate", detail)
    same_id = session.scalar(select(Call).where(Call.call_id == call_id))
    if same_id is not None:
        return IngestOutcome(call_id, str(path), "conflict",
                             f"call_id {call_id} is registered with different bytes "
                             f"(sha256 {same_id.recording_sha256[:12]}…, file {same_id.file_path}); not overwritten")
    meta = rec.meta
    call = Call(
        call_id=call_id, recording_sha256=digest, file_path=str(path.resolve()), file_size=path.stat().st_size,
        agent_id=meta.agent_id, team=meta.team, started_at=meta.started_at, direction=meta.direction,
        business_line=meta.business_line, channel_layout=meta.channel_layout, extra={"source": rec.source},
    )
    try:
        decoded = audio.decode_file(path, max_duration_s=options.max_duration_s)
    except AudioError as e:
        call.status, call.error_code, call.error_message = "failed", e.code, str(e)
        session.add(call)
        log.warning("rejected %s: %s", path, e)
        return IngestOutcome(call_id, str(path), "failed", str(e), e.code)
    call.audio_format = decoded.format
    call.duration_s = round(decoded.duration_s, 3)
    call.sample_rate = decoded.info.sample_rate
    call.channels = decoded.info.channels
    if decoded.info.channels == 1 and meta.channel_layout != "mono":
        # a one-channel file cannot be split by party whatever the manifest says
        call.channel_layout = "mono"
    call.roles_inferred = call.channel_layout == "mono"
    session.add(call)
    return IngestOutcome(call_id, str(path), "registered", f"{decoded.format}, {decoded.duration_s:.1f} s")


def ingest(session: Session, recordings: Iterable[Recording], options: IngestOptions,
           progress: Callable[[IngestOutcome], None] | None = None) -> IngestReport:
    """Ingest recordings one by one, committing after each so a crash loses nothing."""
    options.validate()
    report = IngestReport()
    for rec in recordings:
        try:
            outcome = ingest_recording(session, rec, options)
            session.commit()
        except IntegrityError:
            # another ingest registered the same bytes or id meanwhile: judge again
            session.rollback()
            outcome = ingest_recording(session, rec, options)
            session.commit()
        except Exception:
            session.rollback()
            raise
        report.outcomes.append(outcome)
        if progress:
            progress(outcome)
    return report
