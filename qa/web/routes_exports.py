"""Audit exports for auditors: filters, run (through :func:`qa.reporting.export.export_calls`, which
writes the manifest and the audit event), list and download.

Each export goes into its own folder under ``<data_dir>/exports/web/``. Downloads name a
folder and a file; both must be plain names found by listing that folder, so no path from
the request is ever opened."""

from __future__ import annotations

import json
import re
import secrets
import shutil
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import FileResponse, RedirectResponse
from sqlalchemy.orm import Session

from .. import audit, review, signing
from ..domain import TIERS
from ..errors import NotFound
from ..reporting.export import FORMATS, ExportFilters, ExportOptions, export_calls
from .auth import get_db, require
from .forms import optional_date, split_list
from .render import render

router = APIRouter()

_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,200}")


@dataclass(frozen=True)
class ExportListing:
    name: str
    created_at: str
    actor: str
    format: str
    redacted: bool
    counts: dict
    filters: dict
    files: tuple[str, ...]  # the manifest's files, then the manifest itself


def export_root(request: Request) -> Path:
    return Path(request.app.state.settings.data_dir) / "exports" / "web"


def _listing(folder: Path) -> ExportListing | None:
    manifests = sorted(folder.glob("*.manifest.json"))
    if not manifests:
        return None
    doc = json.loads(manifests[0].read_text(encoding="utf-8"))
    files = tuple(f["name"] for f in doc.get("files", [])) + (manifests[0].name,)
    return ExportListing(folder.name, doc.get("generated_at", ""), doc.get("actor", ""), doc.get("format", ""),
                         bool(doc.get("redacted", True)), doc.get("counts", {}), doc.get("filters", {}), files)


def list_exports(root: Path) -> list[ExportListing]:
    if not root.is_dir():
        return []
    found = (_listing(d) for d in sorted(root.iterdir(), reverse=True) if d.is_dir())
    return [x for x in found if x is not None]


@router.get("/exports")
def exports_page(request: Request, done: str | None = None, user=Depends(require("export.create"))):
    exports = list_exports(export_root(request))
    return render(request, "exports.html", exports=exports, done=done, formats=FORMATS, tiers=TIERS,
                  categories=review.categories())


@router.post("/exports")
def create_export(request: Request, since: str = Form(""), until: str = Form(""), tier: list[str] = Form([]),
                  category: list[str] = Form([]), agents: str = Form(""), teams: str = Form(""),
                  fmt: str = Form("jsonl", alias="format"), include_transcript: str = Form(""), unredacted: str = Form(""),
                  user=Depends(require("export.create")), db: Session = Depends(get_db)):
    tz = request.app.state.settings.tz
    filters = ExportFilters(since=optional_date(since, "from", tz), until=optional_date(until, "until", tz),
                            tiers=tuple(tier), categories=tuple(category), agents=tuple(split_list(agents)),
                            teams=tuple(split_list(teams)))
    options = ExportOptions(format=fmt, include_transcript=include_transcript == "1", redact=unredacted != "1",
                            timezone=request.app.state.settings.timezone)
    filters.validate()
    options.validate()
    now = datetime.now(timezone.utc)
    folder = export_root(request) / f"{now:%Y%m%dT%H%M%S}-{user.username}-{secrets.token_hex(3)}"
    folder.mkdir(parents=True)
    settings = request.app.state.settings
    signer = signing.signer(settings.audit_key_file)
    database = signing.database_id(settings.effective_database_url)
    try:
        result = export_calls(db, folder / f"audit.{fmt}", filters, options, actor=user.username, now=now,
                              signer=signer, database=database)
        db.commit()
    except BaseException:
        # No manifest, no audit event: leave no half-written export behind either.
        shutil.rmtree(folder, ignore_errors=True)
        raise
    if result.checkpoint is not None:
        audit.anchor(signer, database, result.checkpoint)
    return RedirectResponse(f"/exports?done={folder.name}", status_code=303)


@router.get("/exports/{name}/{file_name}")
def download(request: Request, name: str, file_name: str, user=Depends(require("export.create"))):
    root = export_root(request)
    listing = _listing(root / name) if _NAME_RE.fullmatch(name) and (root / name).is_dir() else None
    if listing is None or not _NAME_RE.fullmatch(file_name) or file_name not in listing.files:
        raise NotFound(f"export file {name}/{file_name} does not exist")
    return FileResponse(root / listing.name / file_name, filename=file_name,
                        media_type="application/json" if file_name.endswith(".json") else None)
