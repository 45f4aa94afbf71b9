"""Streaming writers for JSONL, CSV and XLSX audit files.

Every writer takes one call record at a time and keeps nothing but running counts. Files are
written under a temporary name beside the target and renamed when complete, so an interrupted
export never leaves a file that looks finished.
"""

from __future__ import annotations

import csv
import json
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CALL_COLUMNS = ("call_id", "recording_sha256", "agent_id", "team", "started_at", "duration_s", "direction",
                "business_line", "status", "error_code", "asr_model", "asr_sha256", "rule_pack_name",
                "rule_pack_version", "rule_pack_sha256", "score", "fatal", "tier", "calibration_sample", "findings",
                "classifiers", "review_status", "review_verdict", "reviewer", "decided_at", "review_due_at",
                "review_overdue", "purged_at")
FINDING_COLUMNS = ("call_id", "agent_id", "team", "started_at", "tier", "finding_id", "rule_id", "category",
                   "severity", "role", "start_s", "end_s", "source", "matched_text", "evidence", "review_decision",
                   "rule_pack_version", "basis", "related_calls")
UTTERANCE_COLUMNS = ("call_id", "idx", "role", "start_s", "end_s", "text")

# Spreadsheet programs run cells that start with these as formulas (CSV/formula injection):
# a transcript line like "=HYPERLINK(...)" must stay text.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


@dataclass
class ExportCounts:
    """Running totals; bounded by the number of distinct tiers, statuses and categories."""

    calls: int = 0
    findings: int = 0
    utterances: int = 0
    by_status: Counter = field(default_factory=Counter)
    by_tier: Counter = field(default_factory=Counter)
    by_category: Counter = field(default_factory=Counter)

    def add(self, record: dict[str, Any]) -> None:
        self.calls += 1
        self.findings += len(record["findings"])
        self.utterances += len(record.get("transcript") or ())
        self.by_status[record["status"]] += 1
        self.by_tier[record["tier"] or "none"] += 1
        for f in record["findings"]:
            self.by_category[f["category"]] += 1

    def as_dict(self) -> dict[str, Any]:
        return {"calls": self.calls, "findings": self.findings, "utterances": self.utterances,
                "by_status": dict(sorted(self.by_status.items())), "by_tier": dict(sorted(self.by_tier.items())),
                "by_category": dict(self.by_category.most_common())}


def call_row(record: dict[str, Any]) -> dict[str, Any]:
    asr, pack, review = record["asr"] or {}, record["rule_pack"] or {}, record["review"] or {}
    return {
        **{k: record[k] for k in ("call_id", "recording_sha256", "agent_id", "team", "started_at", "duration_s",
                                  "direction", "business_line", "status", "error_code", "score", "fatal", "tier",
                                  "calibration_sample")},
        "asr_model": asr.get("model"), "asr_sha256": asr.get("sha256"),
        "rule_pack_name": pack.get("name"), "rule_pack_version": pack.get("version"),
        "rule_pack_sha256": pack.get("sha256"), "findings": len(record["findings"]),
        "classifiers": json.dumps(record["classifiers"], ensure_ascii=False, sort_keys=True) if record["classifiers"] else None,
        "review_status": review.get("status"), "review_verdict": review.get("verdict"),
        "reviewer": review.get("reviewer"), "decided_at": review.get("decided_at"),
        "review_due_at": review.get("due_at"), "review_overdue": review.get("overdue"),
        "purged_at": record.get("purged_at"),
    }


def basis_text(basis: list[dict]) -> str | None:
    """A finding's regulation citations in one cell: document article (effective date); ..."""
    parts = [" ".join(filter(None, (b.get("document"), b.get("article")))) +
             (f"（{b['effective']}）" if b.get("effective") else "") for b in basis or ()]
    return "；".join(parts) or None


def finding_rows(record: dict[str, Any]):
    pack_version = (record["rule_pack"] or {}).get("version")
    for f in record["findings"]:
        yield {"call_id": record["call_id"], "agent_id": record["agent_id"], "team": record["team"],
               "started_at": record["started_at"], "tier": record["tier"], **{k: f[k] for k in FINDING_COLUMNS if k in f},
               "rule_pack_version": pack_version, "basis": basis_text(f.get("basis")),
               "related_calls": " ".join(f.get("related_calls") or ()) or None}


def utterance_rows(record: dict[str, Any]):
    for idx, u in enumerate(record.get("transcript") or ()):
        yield {"call_id": record["call_id"], "idx": idx, **u}


def sheet_text(value: Any) -> Any:
    """A cell value that spreadsheets show as written."""
    if isinstance(value, str) and value.startswith(_FORMULA_START):
        return "'" + value
    return value


def sibling(path: Path, suffix: str) -> Path:
    """``audit.csv`` -> ``audit-calls.csv``."""
    return path.with_name(f"{path.stem}-{suffix}{path.suffix}")


class _TempFiles:
    """Final path -> temporary path beside it; renamed on commit, removed on abort."""

    def __init__(self, paths: list[Path]):
        self.paths = {p: p.with_name(f".{p.name}.partial") for p in paths}

    def commit(self) -> list[Path]:
        for final, tmp in self.paths.items():
            os.replace(tmp, final)
        return list(self.paths)

    def abort(self) -> None:
        for tmp in self.paths.values():
            tmp.unlink(missing_ok=True)


class JsonlWriter:
    def __init__(self, path: Path, *, include_transcript: bool):
        self._files = _TempFiles([path])
        self._fh = open(self._files.paths[path], "w", encoding="utf-8", newline="\n")

    def write(self, record: dict[str, Any]) -> None:
        self._fh.write(json.dumps(record, ensure_ascii=False, allow_nan=False))
        self._fh.write("\n")

    def close(self, counts: ExportCounts, meta: dict[str, Any]) -> list[Path]:
        self._fh.close()
        return self._files.commit()

    def abort(self) -> None:
        self._fh.close()
        self._files.abort()


class CsvWriter:
    """``PATH``: one row per finding; ``PATH-calls``: one row per call; ``PATH-transcript``:
    one row per utterance when transcripts are included. UTF-8 with a byte-order mark, which
    is what makes Excel read Chinese text correctly."""

    def __init__(self, path: Path, *, include_transcript: bool):
        targets = [path, sibling(path, "calls")] + ([sibling(path, "transcript")] if include_transcript else [])
        self._files = _TempFiles(targets)
        self._handles = [open(self._files.paths[p], "w", encoding="utf-8-sig", newline="") for p in targets]
        columns = [FINDING_COLUMNS, CALL_COLUMNS, UTTERANCE_COLUMNS]
        self._writers = [csv.DictWriter(fh, fieldnames=cols, extrasaction="ignore")
                         for fh, cols in zip(self._handles, columns)]
        for w in self._writers:
            w.writeheader()

    @staticmethod
    def _clean(row: dict[str, Any]) -> dict[str, Any]:
        return {k: sheet_text(v) for k, v in row.items()}

    def write(self, record: dict[str, Any]) -> None:
        findings, calls = self._writers[0], self._writers[1]
        for row in finding_rows(record):
            findings.writerow(self._clean(row))
        calls.writerow(self._clean(call_row(record)))
        if len(self._writers) > 2:
            for row in utterance_rows(record):
                self._writers[2].writerow(self._clean(row))

    def close(self, counts: ExportCounts, meta: dict[str, Any]) -> list[Path]:
        for fh in self._handles:
            fh.close()
        return self._files.commit()

    def abort(self) -> None:
        for fh in self._handles:
            fh.close()
        self._files.abort()


class XlsxWriter:
    """Sheets ``calls``, ``findings`` (``transcript`` when asked) and ``summary``. openpyxl's
    write-only mode streams each sheet's rows to a temporary file, so the workbook never holds
    the rows in memory."""

    def __init__(self, path: Path, *, include_transcript: bool):
        from openpyxl import Workbook

        self._files = _TempFiles([path])
        self._path = path
        self._wb = Workbook(write_only=True)
        self._calls = self._wb.create_sheet("calls")
        self._findings = self._wb.create_sheet("findings")
        self._transcript = self._wb.create_sheet("transcript") if include_transcript else None
        self._summary = self._wb.create_sheet("summary")
        self._calls.append(list(CALL_COLUMNS))
        self._findings.append(list(FINDING_COLUMNS))
        if self._transcript is not None:
            self._transcript.append(list(UTTERANCE_COLUMNS))

    @staticmethod
    def _cells(row: dict[str, Any], columns: tuple[str, ...]) -> list[Any]:
        from openpyxl.cell.cell import ILLEGAL_CHARACTERS_RE

        out = []
        for col in columns:
            value = row.get(col)
            if isinstance(value, str):
                # Control characters are not allowed in XML; ASR output rarely has them, but one
                # would make the whole workbook unreadable.
                value = sheet_text(ILLEGAL_CHARACTERS_RE.sub("", value))
            out.append(value)
        return out

    def write(self, record: dict[str, Any]) -> None:
        self._calls.append(self._cells(call_row(record), CALL_COLUMNS))
        for row in finding_rows(record):
            self._findings.append(self._cells(row, FINDING_COLUMNS))
        if self._transcript is not None:
            for row in utterance_rows(record):
                self._transcript.append(self._cells(row, UTTERANCE_COLUMNS))

    def close(self, counts: ExportCounts, meta: dict[str, Any]) -> list[Path]:
        s = self._summary
        s.append(["item", "value"])
        for key in ("generated_at", "tool_version", "redacted", "include_transcript"):
            s.append([key, meta[key]])
        for key, value in meta["filters"].items():
            text = ", ".join(value) if isinstance(value, list) else value
            s.append([f"filter.{key}", text or "(any)"])
        s.append(["calls", counts.calls])
        s.append(["findings", counts.findings])
        for title, counter in (("status", counts.by_status), ("tier", counts.by_tier),
                               ("category", counts.by_category)):
            for key, n in sorted(counter.items(), key=lambda kv: (-kv[1], kv[0])):
                s.append([f"{title}.{key}", n])
        self._wb.save(self._files.paths[self._path])
        return self._files.commit()

    def abort(self) -> None:
        self._files.abort()


WRITERS = {"jsonl": JsonlWriter, "csv": CsvWriter, "xlsx": XlsxWriter}
