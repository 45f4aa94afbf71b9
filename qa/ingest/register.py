"""Find recordings (a folder, or a manifest CSV/JSONL), hash them and register calls.

Identity is the sha256 of the recording's bytes: ingesting the same bytes again adds
nothing, and a ``call_id`` that arrives with different bytes is reported as a conflict,
never overwritten. A file that fails validation is registered as a ``failed`` call with
the reason, so it is accounted for and the rest of the batch goes on; when the same bytes
come again after the problem was fixed (a wrong extension renamed, say), the call is
checked again and registered. Whatever goes wrong with one file fails that file, never the
batch; only a database that cannot be written stops it.

Times are stored in UTC. A manifest time without an offset, and a time read from a file's
name, is a time in the call centre's zone (the ``timezone`` setting). A folder scan takes a
call's start from a ``YYYYMMDD_HHMMSS`` (or ``YYYYMMDD-HHMMSS``, ``YYYYMMDDHHMMSS``) stamp in
the file name, else from the file's modification time.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone, tzinfo
from pathlib import Path
from typing import Callable, Iterable, Iterator

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.orm import Session

from ..domain import CHANNEL_LAYOUTS, CallMeta, CallStatus
from ..errors import AudioError, ManifestError, StorageError
from ..storage.models import Call
from ..timeutil import as_utc
from . import audio
from .customers import customer_ref, looks_personal

log = logging.getLogger(__name__)

MANIFEST_COLUMNS = ("call_id", "file", "agent_id", "team", "started_at", "direction", "business_line", "channel_layout",
                    "customer_ref")
DIRECTIONS = ("inbound", "outbound")
# The longest value each manifest field may hold (the database columns' sizes).
MAX_LENGTHS = {"call_id": 128, "agent_id": 64, "team": 128, "business_line": 64}
_STAMP = re.compile(r"(?<!\d)(20\d\d)(\d\d)(\d\d)[-_T]?(\d\d)(\d\d)(\d\d)(?!\d)")


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


def _started_from_name(name: str, zone: tzinfo) -> datetime | None:
    match = _STAMP.search(name)
    if match is None:
        return None
    try:
        return as_utc(datetime(*(int(g) for g in match.groups())), zone)
    except ValueError:  # 20261399_... is no time
        return None


def scan_directory(root: str | Path, *, channel_layout: str = "stereo-agent-left",
                   zone: tzinfo = timezone.utc) -> list[Recording]:
    """Every file below ``root`` with an audio extension, in path order. The call id is the
    path relative to ``root`` without its extension; the start time comes from a stamp in the
    file name (a time in ``zone``), else from the file's modification time. An entry with an
    audio extension that is no regular file (a link to a device, a link loop) is listed too, so
    that ingest reports it instead of passing over it."""
    root = Path(root)
    if not root.is_dir():
        raise ManifestError(f"{root}: not a directory", path=str(root))
    found = []
    for path in sorted(p for p in root.rglob("*") if p.suffix.lower() in audio.AUDIO_EXTENSIONS):
        try:
            if path.is_dir():
                continue
            started = _started_from_name(path.name, zone) or datetime.fromtimestamp(path.stat().st_mtime, timezone.utc)
        except OSError:  # a link loop or a link to nothing: ingest says so
            started = None
        call_id = path.relative_to(root).with_suffix("").as_posix()
        found.append(Recording(path=path, meta=CallMeta(call_id=call_id, channel_layout=channel_layout,
                                                        started_at=started), source="dir"))
    return found


def _parse_time(value: str, where: str, zone: tzinfo) -> datetime | None:
    if not value:
        return None
    try:
        return as_utc(datetime.fromisoformat(value.strip()), zone)
    except ValueError as e:
        raise ManifestError(f"{where}: started_at {value!r} is not an ISO 8601 date-time "
                            f"(e.g. 2026-11-02T10:15:00+08:00)") from e


def _manifest_rows(path: Path) -> Iterator[tuple[int, dict[str, str]]]:
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as e:
        raise ManifestError(f"{path}: cannot read manifest: {e}", path=str(path)) from e
    if path.suffix.lower() in (".jsonl", ".ndjson"):
        # split on newlines only: str.splitlines() also breaks at U+2028 inside a value
        for lineno, line in enumerate(text.split("\n"), start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise ManifestError(f"{path}:{lineno}: invalid JSON: {e.msg}", path=str(path)) from e
            if not isinstance(row, dict):
                raise ManifestError(f"{path}:{lineno}: each line must be a JSON object", path=str(path))
            _known_columns(row, f"{path}:{lineno}", path)
            yield lineno, {k: "" if v is None else str(v) for k, v in row.items()}
    elif path.suffix.lower() == ".csv":
        reader = csv.DictReader(io.StringIO(text, newline=""))
        missing = {"call_id", "file"} - set(reader.fieldnames or ())
        if missing:
            raise ManifestError(f"{path}:1: header lacks required column(s) {', '.join(sorted(missing))}; "
                                f"expected {','.join(MANIFEST_COLUMNS)}", path=str(path))
        _known_columns(reader.fieldnames, f"{path}:1", path)
        for row in reader:
            if None in row:
                raise ManifestError(f"{path}:{reader.line_num}: more fields than the header has columns",
                                    path=str(path))
            yield reader.line_num, {k: (v or "").strip() for k, v in row.items()}
    else:
        raise ManifestError(f"{path}: manifest must be .csv or .jsonl", path=str(path))


def _known_columns(columns: Iterable[str], where: str, path: Path) -> None:
    # a typo (channel_layot) would silently give the default layout and swap the parties
    unknown = [c for c in columns if c not in MANIFEST_COLUMNS]
    if unknown:
        raise ManifestError(f"{where}: unknown column(s) {', '.join(map(repr, unknown))}; "
                            f"the columns are {','.join(MANIFEST_COLUMNS)}", path=str(path))


def read_manifest(path: str | Path, *, channel_layout: str = "stereo-agent-left",
                  zone: tzinfo = timezone.utc, customer_key: Callable[[], bytes] | None = None) -> list[Recording]:
    """Parse a manifest; file paths are relative to the manifest's folder (absolute ones are
    taken as they are). Times without an offset are times in ``zone``. A ``customer_ref`` that
    is a phone or ID number is kept only as its hash under the key ``customer_key()`` gives
    (asked for only then: :mod:`qa.ingest.customers`). Every problem is reported with the manifest's file name and
    line."""
    path = Path(path)
    recordings: list[Recording] = []
    seen: dict[str, int] = {}
    for lineno, row in _manifest_rows(path):
        where = f"{path}:{lineno}"
        call_id, file = row.get("call_id", "").strip(), row.get("file", "")
        if not call_id or not file:
            raise ManifestError(f"{where}: call_id and file are required", path=str(path))
        for name, limit in MAX_LENGTHS.items():
            if len(row.get(name) or "") > limit:
                raise ManifestError(f"{where}: {name} is {len(row[name])} characters long; at most {limit}",
                                    path=str(path))
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
            started_at=_parse_time(row.get("started_at", ""), where, zone),
            direction=direction,
            business_line=row.get("business_line") or None,
            channel_layout=layout,
            customer_ref=_customer(row.get("customer_ref"), customer_key, where, path),
        )
        recordings.append(Recording(path=(path.parent / file), meta=meta, source=f"manifest:{path.name}:{lineno}"))
    return recordings


def _customer(value: str | None, key: Callable[[], bytes] | None, where: str, path: Path) -> str | None:
    if not (value or "").strip():
        return None
    personal = looks_personal(value)
    if personal and key is None:
        raise ManifestError(f"{where}: customer_ref looks like a phone or ID number, and no key was given to "
                            f"store it hashed", path=str(path))
    try:
        return customer_ref(value, key() if personal else b"")
    except ValueError as e:
        raise ManifestError(f"{where}: {e}", path=str(path)) from e


def find_recordings(*, folder: str | Path | None = None, manifest: str | Path | None = None,
                    channel_layout: str = "stereo-agent-left", zone: tzinfo = timezone.utc,
                    customer_key: Callable[[], bytes] | None = None) -> list[Recording]:
    """The recordings of a manifest, or of a folder scan."""
    if (folder is None) == (manifest is None):
        raise ValueError("give a folder or a manifest")
    if manifest is not None:
        return read_manifest(manifest, channel_layout=channel_layout, zone=zone, customer_key=customer_key)
    return scan_directory(folder, channel_layout=channel_layout, zone=zone)


def _failed(call: Call, error: AudioError, session: Session, path: Path) -> IngestOutcome:
    call.status, call.error_code, call.error_message = CallStatus.FAILED, error.code, str(error)
    session.add(call)
    log.warning("rejected %s: %s", path, error)
    return IngestOutcome(call.call_id, str(path), "failed", str(error), error.code)


def ingest_recording(session: Session, rec: Recording, options: IngestOptions) -> IngestOutcome:
    """Register one recording (the caller commits). Never raises for a bad file: the
    outcome says what happened."""
    path, call_id = rec.path, rec.meta.call_id
    if path.is_symlink() and not path.is_file():
        return IngestOutcome(call_id, str(path), "failed", f"{path}: a link to no regular file", "audio.not_a_file")
    if not path.is_file():
        if path.exists():
            return IngestOutcome(call_id, str(path), "failed", f"{path}: not a regular file", "audio.not_a_file")
        return IngestOutcome(call_id, str(path), "failed", f"{path}: file not found", "audio.missing")
    if len(call_id) > MAX_LENGTHS["call_id"]:
        return IngestOutcome(call_id, str(path), "failed", f"{path}: call id {call_id[:40]}... is longer than "
                             f"{MAX_LENGTHS['call_id']} characters", "ingest.call_id")
    digest = sha256_file(path)
    same_bytes = session.scalar(select(Call).where(Call.recording_sha256 == digest))
    if same_bytes is not None and same_bytes.purged_at is not None:
        return IngestOutcome(call_id, str(path), "duplicate", f"the recording of call {same_bytes.call_id}, erased "
                             f"{same_bytes.purged_at:%Y-%m-%d} (qa purge): not registered again")
    rejected_before = (same_bytes is not None and same_bytes.status == CallStatus.FAILED
                       and (same_bytes.error_code or "").startswith("audio."))
    if same_bytes is not None and not rejected_before:
        detail = "already registered" if same_bytes.call_id == call_id else f"same bytes as call {same_bytes.call_id}"
        return IngestOutcome(call_id, str(path), "duplicate", detail)
    if same_bytes is None:
        same_id = session.scalar(select(Call).where(Call.call_id == call_id))
        if same_id is not None:
            return IngestOutcome(call_id, str(path), "conflict",
                                 f"call_id {call_id} is registered with different bytes "
                                 f"(sha256 {same_id.recording_sha256[:12]}…, file {same_id.file_path}); not overwritten")
    meta = rec.meta
    # a recording rejected before comes again (its problem fixed, its name perhaps changed):
    # the call is checked anew in place, keeping its id
    call = same_bytes or Call(call_id=call_id, recording_sha256=digest)
    call.file_path, call.file_size = str(path.resolve()), path.stat().st_size
    call.agent_id, call.team, call.started_at = meta.agent_id, meta.team, meta.started_at
    call.direction, call.business_line, call.channel_layout = meta.direction, meta.business_line, meta.channel_layout
    call.customer_ref = meta.customer_ref
    call.extra = {**(call.extra or {}), "source": rec.source}
    try:
        decoded = audio.decode_file(path, max_duration_s=options.max_duration_s)
    except AudioError as e:
        return _failed(call, e, session, path)
    except Exception as e:  # noqa: BLE001 - whatever a decoder does with one file fails that file
        error = AudioError(f"{path}: decoding failed ({type(e).__name__}: {e})", code="audio.internal", path=str(path))
        return _failed(call, error, session, path)
    call.status, call.error_code, call.error_message = CallStatus.REGISTERED, None, None
    call.audio_format = decoded.format
    call.duration_s = round(decoded.duration_s, 3)
    call.sample_rate = decoded.info.sample_rate
    call.channels = decoded.info.channels
    if decoded.info.channels == 1 and meta.channel_layout != "mono":
        # a one-channel file cannot be split by party whatever the manifest says
        call.channel_layout = "mono"
    call.roles_inferred = call.channel_layout == "mono"
    session.add(call)
    detail = f"{decoded.format}, {decoded.duration_s:.1f} s" + (" (rejected before, now valid)" if same_bytes else "")
    return IngestOutcome(call.call_id, str(path), "registered", detail)


def ingest(session: Session, recordings: Iterable[Recording], options: IngestOptions,
           progress: Callable[[IngestOutcome], None] | None = None) -> IngestReport:
    """Ingest recordings one by one, committing after each so a crash loses nothing. Raises
    :class:`StorageError` only when the database itself cannot take the writes."""
    options.validate()
    report = IngestReport()
    for rec in recordings:
        try:
            try:
                outcome = ingest_recording(session, rec, options)
                session.commit()
            except IntegrityError:
                # another ingest registered the same bytes or id meanwhile: judge again
                session.rollback()
                outcome = ingest_recording(session, rec, options)
                session.commit()
        except SQLAlchemyError as e:
            session.rollback()
            raise StorageError(f"cannot register {rec.path}: the database refused the write ({e.orig or e})") from e
        except Exception as e:  # noqa: BLE001 - one bad file must not stop the batch
            session.rollback()
            log.exception("ingesting %s failed", rec.path)
            outcome = IngestOutcome(rec.meta.call_id, str(rec.path), "failed", f"{rec.path}: {type(e).__name__}: {e}",
                                    "ingest.internal")
        report.outcomes.append(outcome)
        if progress:
            progress(outcome)
    return report
