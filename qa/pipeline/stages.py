"""The stage functions the pipeline runs, gathered in one :class:`Stages` value so that the
local and Ray executors run exactly the same code, and tests can inject small fakes.

The split follows where the work runs:

* ``prepare`` (decode, VAD: CPU) runs in worker processes and returns a picklable value;
* ``load_asr`` / ``decode`` hold the Whisper model and run the batched decode loop (the GPU);
* ``store_transcript`` writes one call's transcript in the caller's session (one transaction
  per call, committed by the pipeline);
* ``open_analyzer`` loads the rule pack and classifiers once per worker; ``analyze`` runs them
  over one call's current transcript (CPU, worker processes);
* ``score_route`` and ``export`` run in the driver.

Every function that writes is idempotent: a call whose output exists is skipped, so re-running
after a crash never writes twice.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, Callable, Sequence

from sqlalchemy.orm import Session, sessionmaker

from ..config import Settings


@dataclass(frozen=True)
class CallRef:
    """What a worker needs to know about a call without a database round trip."""

    pk: int
    call_id: str
    file_path: str
    channel_layout: str
    duration_s: float


@dataclass(frozen=True)
class ExportScope:
    """What the day's export covers: calls that started in ``[since, until)``; both ``None``
    means every call."""

    day: date
    since: datetime | None = None
    until: datetime | None = None


@dataclass(frozen=True)
class Artifacts:
    """Where the export and report of a run were written (``None``: not written)."""

    export_dir: str | None = None
    report_path: str | None = None
    details: tuple[str, ...] = ()


@dataclass(frozen=True)
class Stages:
    prepare: Callable[[Settings, CallRef], Any]
    load_asr: Callable[[Settings], Any]
    decode: Callable[[Any, Sequence[Any]], list[Any]]
    store_transcript: Callable[[Session, Any, Any, Any], int]  # (session, asr, prepared, decoded) -> utterances
    open_analyzer: Callable[[Settings], Any]
    analyze: Callable[[Session, Any, int], int]  # (session, analyzer, call pk) -> findings
    score_route: Callable[[Session, Settings, Sequence[int]], Any]
    export: Callable[[sessionmaker[Session], Settings, ExportScope, str], Artifacts]  # (..., out_dir)
