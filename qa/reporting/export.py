"""Compliance audit exports: JSONL, CSV or XLSX files with a manifest beside them.

``export_calls`` streams the matching calls in chunks (see :mod:`qa.reporting.records`),
writes them with a format writer (:mod:`qa.reporting.writers`), writes the manifest
(:mod:`qa.reporting.manifest`) and appends an ``export.create`` event to the audit log, or
``export.unredacted`` when PII was left in. The caller owns the session and commits.

Redaction is on by default. Only an active user with the ``auditor`` or ``admin`` role may
export without it (:func:`authorize_unredacted`); there is no way around the users table.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from dataclasses import replace
from datetime import datetime, timezone, tzinfo
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from .. import __version__
from .. import signing
from ..config import Settings
from ..errors import ExportError, PermissionDenied
from ..permissions import can, roles_for
from ..redact import redact_text
from ..storage import is_sqlite, reading_bind
from ..storage.models import AuditEvent, User
from ..timeutil import zone
from .manifest import (FileCheck, ManifestCheck, file_entries, manifest_path, sha256_file, verify_manifest,
                       write_manifest)
from .records import ExportFilters, iso, iter_call_id_chunks, load_chunk
from .writers import WRITERS, ExportCounts

log = logging.getLogger(__name__)

FORMATS = tuple(WRITERS)
UNREDACTED_ROLES = roles_for("export.unredacted")

__all__ = ["ExportFilters", "ExportOptions", "ExportResult", "FileCheck", "ManifestCheck", "FORMATS",
           "authorize_unredacted", "export_calls", "export_signed", "find_export_event", "verify_manifest"]


@dataclass(frozen=True)
class ExportOptions:
    format: str = "jsonl"
    include_transcript: bool = False
    redact: bool = True
    chunk_size: int = 500  # calls fetched per round trip; memory grows with this, not with the export
    timezone: str = "UTC"  # the offset times are written with (the same instants in any zone)

    @property
    def tz(self) -> tzinfo:
        return zone(self.timezone)

    def validate(self) -> None:
        self.tz  # noqa: B018 - raises on an unknown zone
        if self.format not in FORMATS:
            raise ValueError(f"unknown export format {self.format!r}; formats are {', '.join(FORMATS)}")
        if not 1 <= self.chunk_size <= 10_000:
            raise ValueError(f"chunk_size must be between 1 and 10000, got {self.chunk_size}")


@dataclass(frozen=True)
class ExportResult:
    manifest: Path
    manifest_sha256: str
    files: tuple[Path, ...]
    calls: int
    findings: int
    redacted: bool
    elapsed_s: float
    unchanged: bool = False  # the same files as the last export of this name: no new event
    checkpoint: dict | None = None  # the signed audit checkpoint taken after the export event


def authorize_unredacted(session: Session, username: str | None) -> User:
    """The user allowed to export without redaction, or :class:`PermissionDenied`."""
    if not username:
        raise PermissionDenied("exports without redaction need --as USER (a user with role auditor or admin)")
    user = session.scalars(select(User).where(User.username == username)).first()
    if user is None:
        raise PermissionDenied(f"user {username!r} is not in the users table; only users with role "
                               f"{' or '.join(UNREDACTED_ROLES)} may export without redaction")
    if not user.active:
        raise PermissionDenied(f"user {username!r} is deactivated")
    if not can(user.role, "export.unredacted"):
        raise PermissionDenied(f"user {username!r} has role {user.role}; exports without redaction need role "
                               f"{' or '.join(UNREDACTED_ROLES)}")
    return user


def _keep(text: str | None) -> str | None:
    return text


def _previous_export(session: Session, manifest: Path, files: list[dict]) -> AuditEvent | None:
    """The last export event of this manifest name, when it recorded exactly these files and
    the manifest on disk is still the one it recorded (a re-run that wrote the same export)."""
    event = session.scalars(select(AuditEvent).where(
        AuditEvent.action.in_(("export.create", "export.unredacted")), AuditEvent.object_type == "export",
        AuditEvent.object_id == manifest.name).order_by(AuditEvent.seq.desc()).limit(1)).first()
    if event is None or (event.after or {}).get("files") != {f["name"]: f["sha256"] for f in files}:
        return None
    if not manifest.is_file() or sha256_file(manifest) != (event.after or {}).get("manifest_sha256"):
        return None
    return event


def export_calls(session: Session, out: Path, filters: ExportFilters, options: ExportOptions, *, actor: str,
                 now: datetime | None = None, signer: signing.Signer | None = None,
                 database: str | None = None) -> ExportResult:
    """Write the export files and manifest, and append the audit event to ``session`` (the
    caller commits). The export shows committed data only. With a ``signer`` the manifest is
    signed and the audit chain's head is signed right after the export's event (the returned
    ``checkpoint``, which the caller anchors once committed: :func:`qa.audit.anchor`). An
    export that writes the same files as the last one of its name (a resumed nightly) keeps
    the manifest and the event it already has.

    ``out`` is the main file (for CSV, the findings file; the calls file is written beside
    it). Raises :class:`ExportError` when files cannot be written, and
    :class:`PermissionDenied` for an unredacted export by a user not allowed to."""
    filters.validate()
    options.validate()
    out = Path(out)
    if not out.parent.is_dir():
        raise ExportError(f"folder {out.parent} does not exist", path=str(out))
    now = now or datetime.now(timezone.utc)
    t0 = time.perf_counter()
    redact = redact_text if options.redact else _keep
    counts = ExportCounts()
    meta = {"generated_at": iso(now, options.tz), "tool_version": __version__, "redacted": options.redact,
            "include_transcript": options.include_transcript, "filters": filters.as_dict(options.tz),
            "timezone": options.timezone}
    # The export reads through its own session on the caller's engine: a long export then
    # holds no read snapshot in the caller's transaction, which on SQLite would make the
    # audit append below fail ("database is busy") once any other writer has committed.
    with Session(bind=reading_bind(session)) as reader:
        if not is_sqlite(session):
            # One snapshot for the whole export, so the manifest's counts match the files
            # even while the pipeline writes (SQLite transactions are snapshots already).
            reader.connection(execution_options={"isolation_level": "REPEATABLE READ"})
        if not options.redact:
            authorize_unredacted(reader, actor)
        try:
            writer = WRITERS[options.format](out, include_transcript=options.include_transcript)
        except OSError as e:
            raise ExportError(f"cannot create export file: {e}", path=str(out)) from e
        try:
            for ids in iter_call_id_chunks(reader, filters, options.chunk_size):
                for record in load_chunk(reader, ids, include_transcript=options.include_transcript,
                                         redact=redact, now=now, tz=options.tz):
                    writer.write(record)
                    counts.add(record)
                log.debug("exported %d calls so far", counts.calls)
            paths = writer.close(counts, meta)
        except OSError as e:
            writer.abort()
            raise ExportError(f"cannot write export: {e}", path=str(out)) from e
        except BaseException:
            writer.abort()
            raise

    files = file_entries(paths)
    mpath = manifest_path(out)
    from .. import audit  # imported late: the audit module pulls in the database layer

    previous = _previous_export(session, mpath, files)
    if previous is not None:
        log.info("export %s: the same files as audit event %d; manifest and event kept", out, previous.seq)
        return ExportResult(manifest=mpath, manifest_sha256=previous.after["manifest_sha256"], files=tuple(paths),
                            calls=counts.calls, findings=counts.findings, redacted=options.redact,
                            elapsed_s=time.perf_counter() - t0, unchanged=True)
    manifest_sha = write_manifest(mpath, {"tool": "qa-speech", **meta, "format": options.format,
                                          "actor": actor, "counts": counts.as_dict(), "files": files}, signer)
    try:
        audit.append(session, actor, "export.create" if options.redact else "export.unredacted", "export",
                     mpath.name, None, {"format": options.format, "filters": meta["filters"],
                                        "redacted": options.redact,
                                        "include_transcript": options.include_transcript, "calls": counts.calls,
                                        "findings": counts.findings, "manifest_sha256": manifest_sha,
                                        "files": {f["name"]: f["sha256"] for f in files}})
        checkpoint = audit.checkpoint(session, signer, database or "", f"export {mpath.name}") if signer else None
    except BaseException:
        # An export the audit log does not know about must not stay behind.
        for path in (*paths, mpath):
            path.unlink(missing_ok=True)
        raise
    elapsed = time.perf_counter() - t0
    log.info("exported %d calls (%d findings) to %s in %.1f s%s", counts.calls, counts.findings, out, elapsed,
             "" if options.redact else " WITHOUT redaction")
    return ExportResult(manifest=mpath, manifest_sha256=manifest_sha, files=tuple(paths), calls=counts.calls,
                        findings=counts.findings, redacted=options.redact, elapsed_s=elapsed, checkpoint=checkpoint)


def export_signed(factory: sessionmaker[Session], settings: Settings, out: Path, filters: ExportFilters,
                  options: ExportOptions, *, actor: str) -> ExportResult:
    """:func:`export_calls` in a write transaction of its own, with the manifest and the audit
    chain signed (the key of the ``audit_key_file`` setting, created when there is none) and the
    checkpoint anchored beside the key: what the command line, the web UI and the nightly run.
    Times are written on the clock of the ``timezone`` setting."""
    from .. import audit
    from ..storage import write_session

    options = replace(options, timezone=settings.timezone)
    signer = signing.signer(settings.audit_key_file)
    database = signing.database_id(settings.effective_database_url)
    with write_session(factory) as session:
        result = export_calls(session, out, filters, options, actor=actor, signer=signer, database=database)
        session.commit()
    if result.checkpoint is not None:
        audit.anchor(signer, database, result.checkpoint)
    return result


def find_export_event(session: Session, check: ManifestCheck) -> AuditEvent | None:
    """The audit event that recorded this manifest (same name and sha256), or None.

    The file hashes prove the files match the manifest; this proves the manifest is the one
    the system wrote, since someone who edits a file can also rewrite the manifest but cannot
    rewrite the hash-chained audit log unnoticed (``qa audit verify``)."""
    events = session.scalars(select(AuditEvent).where(
        AuditEvent.action.in_(("export.create", "export.unredacted")), AuditEvent.object_type == "export",
        AuditEvent.object_id == check.manifest.name).order_by(AuditEvent.seq.desc()))
    return next((e for e in events if (e.after or {}).get("manifest_sha256") == check.manifest_sha256), None)
