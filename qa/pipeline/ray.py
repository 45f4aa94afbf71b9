"""The Ray executor: the same stage functions on a Ray cluster, through Ray Data.

    calls --map_batches(_Prepare)-->  --map_batches(_Transcribe)-->  --map_batches(_Analyze)--> driver
           CPU actor pool              one actor per GPU holding        CPU actor pool
           (decode, VAD)               the Whisper model (decode loop,  (rules, classifiers)
                                       store transcript)

Ray Data streams blocks between the stages, so CPU preparation, decoding and analysis overlap
and its backpressure bounds what is in flight. Each actor owns a database engine and writes
every call through the same idempotent per-call transactions as the local executor
(:mod:`qa.pipeline.jobs`), so a crash or a retried Ray task never writes twice. On a cluster the
database must be reachable from every node (PostgreSQL); SQLite works on a single machine.

Ray is imported only here, and only when ``--executor ray`` is asked for; install it with
``pip install 'qa-speech[ray]'``.
"""

from __future__ import annotations

import logging
import pickle
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..config import Settings
from ..errors import ConfigError
from ..storage.retry import RetryPolicy
from .jobs import ExecContext, JobOutcome, WorkerState, WorkResult, configure_logging, decode_batch, log_setup
from .local import ExecutorOptions
from .runs import StageTiming
from .stages import CallRef, Stages

log = logging.getLogger(__name__)


@dataclass
class _Item:
    """One call travelling through the Ray stages (pickled into the dataset's one column, so
    the stages' own types need no Arrow schema)."""

    ref: CallRef
    prepared: Any = None
    outcomes: list[JobOutcome] = field(default_factory=list)

    @property
    def alive(self) -> bool:
        return all(o.ok for o in self.outcomes)


def _items(batch: dict[str, np.ndarray]) -> list[_Item]:
    return [pickle.loads(blob) for blob in batch["item"]]


def _batch(items: list[_Item]) -> dict[str, np.ndarray]:
    out = np.empty(len(items), dtype=object)
    out[:] = [pickle.dumps(item) for item in items]
    return {"item": out}


class _Stage:
    def __init__(self, settings: Settings, stages: Stages, policy: RetryPolicy, logs):
        configure_logging(logs)
        self.state = WorkerState(settings, stages, policy)


class _Prepare(_Stage):
    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        items = _items(batch)
        for item in items:
            outcome = self.state.prepare(item.ref)
            item.prepared, item.outcomes = outcome.value, item.outcomes + [replace(outcome, value=None)]
        return _batch(items)


class _Transcribe(_Stage):
    """Holds the model: Ray Data keeps this actor alive across batches."""

    def __init__(self, settings: Settings, stages: Stages, policy: RetryPolicy, logs):
        super().__init__(settings, stages, policy, logs)
        started = time.perf_counter()
        self.asr = stages.load_asr(settings)
        log.info("ASR model loaded in a Ray actor in %.1f s", time.perf_counter() - started)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        items = _items(batch)
        live = [item for item in items if item.alive]
        state, stages = self.state, self.state.stages
        started = time.time()
        out = decode_batch(stages, self.asr, [(i.ref, i.prepared) for i in live], state.factory, state.policy)
        by_pk = {item.ref.pk: item for item in live}
        share = out.busy_s / max(1, len(live))  # each call's share of the decode loop's busy time
        for failed in out.failed:
            by_pk[failed.ref.pk].outcomes.append(replace(failed, started_at=started, busy_s=share))
        for ref, prepared, decoded in out.decoded:
            outcome = state.run(ref, "transcribe",
                                lambda s, p=prepared, d=decoded: stages.store_transcript(s, self.asr, p, d))
            # the call's transcription began when its batch entered the decoder
            by_pk[ref.pk].outcomes.append(replace(outcome, started_at=started, busy_s=share,
                                                  seconds=time.time() - started))
        for item in items:
            item.prepared = None  # the audio is not needed downstream
        return _batch(items)


class _Analyze(_Stage):
    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        items = _items(batch)
        for item in items:
            if item.alive:
                item.outcomes.append(self.state.analyze(item.ref))
        return _batch(items)


def _ray():
    try:
        import ray
    except ImportError as e:
        raise ConfigError("the Ray executor needs Ray: pip install 'qa-speech[ray]' (or --executor local)") from e
    return ray


def _absolute(settings: Settings) -> Settings:
    """Ray workers do not share the driver's working directory: make paths absolute."""
    url = settings.effective_database_url
    if url.startswith("sqlite:///") and not url.startswith("sqlite:////"):
        url = f"sqlite:///{Path(url[len('sqlite:///'):]).resolve()}"
    return replace(settings, database_url=url, data_dir=str(Path(settings.data_dir).resolve()),
                   cache_dir=str(Path(settings.cache_dir).resolve()))


def _timing(stage: str, outcomes: list[JobOutcome]) -> StageTiming:
    """A stage's span across all actors: from its first call's start to its last call's end."""
    mine = [o for o in outcomes if o.stage == stage]
    span = max(o.started_at + o.seconds for o in mine) - min(o.started_at for o in mine) if mine else 0.0
    timing = StageTiming(stage, seconds=span, calls=len(mine), audio_s=sum(o.ref.duration_s for o in mine),
                         failed=sum(1 for o in mine if not o.ok))
    if stage == "transcribe" and mine:
        timing.busy_s = sum(o.busy_s for o in mine)
    return timing


class RayExecutor:
    def __init__(self, address: str | None = None, options: ExecutorOptions = ExecutorOptions()):
        self.address = address
        self.options = options

    def _init(self, ray) -> None:
        if ray.is_initialized():
            return
        if self.address:
            ray.init(address=self.address, log_to_driver=True)
        else:
            # a private local instance; CPU stages ask for half a core each so that the decode
            # actor and both CPU pools fit on a small machine
            ray.init(include_dashboard=False, log_to_driver=True, configure_logging=False)

    def run(self, ctx: ExecContext, transcribe: Sequence[CallRef], analyze: Sequence[CallRef]) -> WorkResult:
        if not transcribe and not analyze:
            return WorkResult()
        ray = _ray()
        self._init(ray)
        ray.data.DataContext.get_current().enable_progress_bars = False
        settings = _absolute(ctx.settings)
        args = (settings, ctx.stages, ctx.retry, log_setup())
        # one decode actor per GPU, each holding its own model; one CPU actor without GPUs
        n_gpus = int(ray.cluster_resources().get("GPU", 0))
        gpus, n_gpu_actors = (1.0, n_gpus) if n_gpus else (0.0, 1)
        workers = self.options.n_workers
        cpu_pool = dict(batch_size=1, concurrency=(1, workers), num_cpus=0.5, fn_constructor_args=args)
        result = WorkResult()
        started = time.time()
        audio = sum(r.duration_s for r in transcribe)
        chained = transcribe if ctx.analyze_transcribed else ()
        bars = {"prepare": ctx.progress.stage("prepare", len(transcribe), audio),
                "transcribe": ctx.progress.stage("transcribe", len(transcribe), audio),
                "analyze": ctx.progress.stage("analyze", len(chained) + len(analyze),
                                              sum(r.duration_s for r in (*chained, *analyze)))}
        if analyze:
            ds = ray.data.from_items([{"item": pickle.dumps(_Item(r))} for r in analyze])
            self._collect(ctx, ds.map_batches(_Analyze, **cpu_pool), result, bars)
        if transcribe:
            ds = ray.data.from_items([{"item": pickle.dumps(_Item(r))} for r in transcribe])
            ds = ds.map_batches(_Prepare, **cpu_pool)
            ds = ds.map_batches(_Transcribe, batch_size=self.options.calls_per_decode, concurrency=n_gpu_actors,
                                num_gpus=gpus, num_cpus=0 if gpus else 1, fn_constructor_args=args)
            if ctx.analyze_transcribed:
                ds = ds.map_batches(_Analyze, **cpu_pool)
            self._collect(ctx, ds, result, bars)
        for bar in bars.values():
            bar.close()
        result.timings = [t for t in (_timing(s, result.outcomes) for s in ("prepare", "transcribe", "analyze"))
                          if t.calls]
        log.info("Ray executor finished %d call-stages in %.1f s", len(result.outcomes), time.time() - started)
        return result

    @staticmethod
    def _collect(ctx: ExecContext, ds, result: WorkResult, bars: dict) -> None:
        for row in ds.iter_rows():
            item: _Item = pickle.loads(row["item"])
            for outcome in item.outcomes:
                result.outcomes.append(outcome)
                bars[outcome.stage].advance(1, outcome.ref.duration_s, 0 if outcome.ok else 1)
                if outcome.ok and outcome.stage in ("transcribe", "analyze"):
                    ctx.crash.tick(outcome.stage)
