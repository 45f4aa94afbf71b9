"""Batched greedy decoding around openai-whisper's model modules.

Stock ``whisper.transcribe`` decodes one 30 s window of one file at a time and re-runs the
cross-attention key/value projections of the audio at every step. Here many windows (speech
segments from many calls) share one batch of ``batch_size`` *slots*:

* every slot has a preallocated self-attention KV cache of fixed length and the cross-attention
  keys/values of its window, computed once when the window enters the slot;
* one decode step advances every slot by one token; each slot has its own position, so a slot
  whose window finished is refilled with the next pending window while the others go on;
* finished rows are detected on the device (``done`` flags) and the host looks at them only every
  ``sync_every`` steps; when nothing is pending the batch is compacted to the live rows;
* greedy without timestamp tokens, language forced, optional prompt through ``<|startofprev|>``;
  on CUDA the step is captured once as a CUDA graph (static shapes make that possible);
* optionally (``cross_kv_dtype``, CUDA only) the cross-attention keys/values are stored in 8 bits
  (FP8 e4m3 or int8, scales per channel) and read by the Triton kernel of ``kv8_attention``:
  half the bytes of the read that bounds large batches, and twice the batch in the same memory;
* windows that fail the compression-ratio or average-log-prob checks (and loops caught by the
  repetition guard) are decoded again at the next temperature, only those.

Token choices, log-probs and the no-speech probability follow ``whisper.decoding`` exactly
(same suppressed tokens, blank suppression at the first step, sum of log-probs including
end-of-text divided by ``len(tokens) + 1``), so at temperature 0 the tokens equal
``whisper.decode``'s greedy tokens up to floating-point ties.
"""

from __future__ import annotations

import logging
import math
import zlib
from collections import deque
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from whisper.audio import HOP_LENGTH, N_FFT
from whisper.audio import N_SAMPLES as WINDOW_SAMPLES

from ..domain import SAMPLE_RATE
from ..errors import TranscriptionError
from .beam import BeamOptions, Group, advance, best_sequence
from .biasing import BiasOptions, HotwordTrie
from .precision import OutputProjection, cross_attention_bf16, lower_precision

log = logging.getLogger(__name__)

CROSS_KV_DTYPES = ("model", "fp8", "int8")
COMPUTE_TYPES = ("model", "bfloat16")


@dataclass(frozen=True)
class DecodeOptions:
    language: str = "zh"
    prompt: str = ""
    batch_size: int = 16
    max_new_tokens: int = 224  # whisper's sample_len: half the text context
    min_new_tokens: int = 0  # end-of-text suppressed before this many tokens (benchmarks)
    temperatures: tuple[float, ...] = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)
    compression_ratio_threshold: float | None = 2.4
    logprob_threshold: float | None = -1.0
    no_speech_threshold: float = 0.6
    sync_every: int = 8
    encoder_batch: int = 16
    loop_min_span: int = 24  # a token pattern repeated over this many tokens is a loop; 0: off
    cuda_graphs: bool = True
    seed: int = 0
    # "model": cross-attention K/V in the model's dtype (exact); "fp8"/"int8": 8-bit storage,
    # CUDA only, tokens may differ from stock decoding where the quantisation tips a choice
    cross_kv_dtype: str = "model"
    # "model": matrix products in the loaded model's dtype; "bfloat16": the Linear layers of a
    # float32 CPU model in bfloat16 (qa.asr.precision), for CPUs with native bfloat16
    compute_type: str = "model"
    # hotword biasing (qa.asr.biasing): a bonus per token of a listed word followed
    hotwords: tuple[str, ...] = ()
    hotword_bonus: float = 1.5
    # beam search at temperature 0 (1: greedy); the fallback temperatures still sample
    beam_size: int = 1
    patience: float = 1.0
    length_penalty: float | None = None

    @property
    def beam(self) -> BeamOptions:
        return BeamOptions(self.beam_size, self.patience, self.length_penalty)

    def validate(self) -> None:
        self.beam.validate()
        BiasOptions(self.hotwords, self.hotword_bonus).validate()
        if self.batch_size < 1 or self.encoder_batch < 1 or self.sync_every < 1:
            raise ValueError("batch_size, encoder_batch and sync_every must be at least 1")
        if self.max_new_tokens < 1 or not 0 <= self.min_new_tokens <= self.max_new_tokens:
            raise ValueError("need 1 <= max_new_tokens and 0 <= min_new_tokens <= max_new_tokens")
        if not self.temperatures or any(t < 0 for t in self.temperatures):
            raise ValueError("temperatures must be a non-empty list of non-negative values")
        if self.loop_min_span < 0:
            raise ValueError("loop_min_span must be >= 0")
        if self.cross_kv_dtype not in CROSS_KV_DTYPES:
            raise ValueError(f"cross_kv_dtype must be one of {', '.join(CROSS_KV_DTYPES)}, got {self.cross_kv_dtype!r}")
        if self.compute_type not in COMPUTE_TYPES:
            raise ValueError(f"compute_type must be one of {', '.join(COMPUTE_TYPES)}, got {self.compute_type!r}")


@dataclass(frozen=True)
class WindowResult:
    tokens: tuple[int, ...]
    text: str
    avg_logprob: float
    no_speech_prob: float
    compression_ratio: float
    temperature: float
    looped: bool = False


def compression_ratio(text: str) -> float:
    raw = text.encode("utf-8")
    return len(raw) / len(zlib.compress(raw)) if raw else 0.0


def find_loop(tokens: Sequence[int], min_span: int, max_period: int = 32) -> int | None:
    """If the tail of ``tokens`` repeats one pattern over at least ``min_span`` tokens (at
    least 3 times), return where the repeats start past the first one, else None."""
    n = len(tokens)
    if min_span <= 0 or n < min_span:
        return None
    for period in range(1, min(max_period, n // 3) + 1):
        span = period
        while span + period <= n and tokens[n - span - period : n - span] == tokens[n - period :]:
            span += period
        # span counts the tokens covered by whole repeats of the last `period` tokens
        if span >= max(min_span, 3 * period):
            return n - span + period
    return None


def log_mel_batch(audio: torch.Tensor, n_mels: int) -> torch.Tensor:
    """Whisper's log-Mel spectrogram for a batch of 30 s windows [R, 480000] -> [R, n_mels, 3000],
    normalised per window exactly as ``whisper.log_mel_spectrogram`` does for one window."""
    from whisper.audio import mel_filters

    window = torch.hann_window(N_FFT, device=audio.device)
    stft = torch.stft(audio, N_FFT, HOP_LENGTH, window=window, return_complex=True)
    magnitudes = stft[..., :-1].abs() ** 2
    mel = mel_filters(audio.device, n_mels) @ magnitudes
    log_spec = torch.clamp(mel, min=1e-10).log10()
    peak = log_spec.amax(dim=(-2, -1), keepdim=True)
    log_spec = torch.maximum(log_spec, peak - 8.0)
    return (log_spec + 4.0) / 4.0


def _pad_window(audio: np.ndarray | torch.Tensor) -> torch.Tensor:
    t = torch.as_tensor(audio, dtype=torch.float32).reshape(-1)
    if t.numel() > WINDOW_SAMPLES:
        raise TranscriptionError(f"window of {t.numel() / SAMPLE_RATE:.1f} s is longer than 30 s")
    return F.pad(t, (0, WINDOW_SAMPLES - t.numel()))


@dataclass
class _State:
    """Device tensors of one batch of slots; shapes are fixed so a CUDA graph can replay steps."""

    self_k: list[torch.Tensor]  # per layer [B, H, L, d]
    self_v: list[torch.Tensor]
    cross_k: list[torch.Tensor]  # per layer [B, H, n_audio_ctx, d]; uint8 codes when 8-bit
    cross_v: list[torch.Tensor]
    cur: torch.Tensor  # [B] token fed at the next step
    pos: torch.Tensor  # [B] its position
    n_gen: torch.Tensor  # [B] tokens generated so far (end-of-text included)
    done: torch.Tensor  # [B] bool
    sum_lp: torch.Tensor  # [B] float32
    no_speech: torch.Tensor  # [B] float32
    out: torch.Tensor  # [B, max_new] generated tokens
    bias_node: torch.Tensor  # [B] hotword trie node of each slot (0: outside any hotword)
    bias_earned: torch.Tensor  # [B] bonus earned in the current hotword (withdrawn if left; beam search)
    true_lp: torch.Tensor  # [B] the model's own sum of log-probs (sum_lp adds bonuses in beam search)
    graph: object | None = None
    items: list[int] = field(default_factory=list)  # window index per slot, -1 when free
    cross_k_scale: list[torch.Tensor] = field(default_factory=list)  # per layer [B, H, d], 8-bit only
    cross_v_scale: list[torch.Tensor] = field(default_factory=list)

    @property
    def size(self) -> int:
        return int(self.cur.shape[0])


class BatchedDecoder:
    """Decode many ≤30 s audio windows with one Whisper model."""

    def __init__(self, model: torch.nn.Module, options: DecodeOptions):
        import whisper.tokenizer


        options.validate()
        low = options.compute_type != "model"
        self.model = lower_precision(model, options.compute_type) if low else model
        self.options = options
        self.dims = model.dims
        param = next(model.parameters())
        self.device, self.dtype = param.device, param.dtype
        self._logits = OutputProjection(self.model.decoder, options.compute_type)
        self.tokenizer = whisper.tokenizer.get_tokenizer(
            model.is_multilingual, num_languages=model.num_languages, language=options.language, task="transcribe"
        )
        tok = self.tokenizer
        initial = list(tok.sot_sequence_including_notimestamps)
        if options.prompt.strip():
            prompt_tokens = tok.encode(" " + options.prompt.strip())
            initial = [tok.sot_prev] + prompt_tokens[-(self.dims.n_text_ctx // 2 - 1) :] + initial
        self.initial_tokens = tuple(initial)
        self.sot_index = self.initial_tokens.index(tok.sot)
        self.n_prompt = len(initial)
        self.max_new = min(options.max_new_tokens, self.dims.n_text_ctx - self.n_prompt)
        self.cache_len = self.n_prompt + self.max_new
        suppress = set(tok.non_speech_tokens) | {tok.transcribe, tok.translate, tok.sot, tok.sot_prev, tok.sot_lm}
        if tok.no_speech is not None:
            suppress.add(tok.no_speech)
        self.eot = tok.eot
        self.no_speech_token = tok.no_speech
        dev = self.device
        self._suppress = torch.tensor(sorted(suppress), device=dev)
        self._blank = torch.tensor(tok.encode(" ") + [tok.eot], device=dev)
        self._key_pos = torch.arange(self.cache_len, device=dev)
        self._prompt = torch.tensor(self.initial_tokens, device=dev)
        self._generator = torch.Generator(device=dev)
        # made here once: a CUDA graph capture may not copy host scalars to the device
        self._neg_inf = torch.tensor(-math.inf, device=dev)
        self._eot = torch.tensor(self.eot, device=dev)
        self._use_graphs = options.cuda_graphs and self.device.type == "cuda"
        n_head = self.dims.n_text_head
        self._heads, self._head_dim = n_head, self.dims.n_text_state // n_head
        self._kv8 = None if options.cross_kv_dtype == "model" else options.cross_kv_dtype
        # with bfloat16 products the cross-attention keys and values are stored in bfloat16 too
        self._cross_bf16 = options.compute_type == "bfloat16" and not self._kv8
        if self._kv8:
            self._attention8 = _load_kv8(self._kv8, self.device, self._head_dim)
        # a suppressed token pads the trie's tables: its logit is -inf, a bonus cannot lift it
        self._trie = (HotwordTrie.compile(tok, options.hotwords, tok.sot, dev) if options.hotwords else None)

    # ---------------------------------------------------------------- public API

    def decode(self, windows: Sequence[np.ndarray | torch.Tensor]) -> list[WindowResult]:
        """Decode 16 kHz mono windows of at most 30 s; results are in input order. Windows that
        fail the quality checks are decoded again at the next temperature; one that fails at
        every temperature keeps its most likely attempt (:func:`best_attempt`)."""
        opts = self.options
        results: list[WindowResult | None] = [None] * len(windows)
        attempts: dict[int, list[WindowResult]] = {}
        todo = list(range(len(windows)))
        for t_index, temperature in enumerate(opts.temperatures):
            if not todo:
                break
            self._generator.manual_seed(opts.seed + t_index)
            for idx, res in self._run(windows, todo, temperature).items():
                results[idx] = res
                attempts.setdefault(idx, []).append(res)
            last = t_index == len(opts.temperatures) - 1
            retry = [] if last else [i for i in todo if self.needs_fallback(results[i])]
            if retry:
                log.debug("temperature %.1f: %d of %d windows fall back", temperature, len(retry), len(todo))
            todo = retry
        for idx, tried in attempts.items():
            # failed at every temperature: keep the most likely attempt, not the hottest sample
            if len(tried) > 1 and self.needs_fallback(tried[-1]):
                results[idx] = best_attempt(tried, opts.compression_ratio_threshold)
        return [r for r in results if r is not None]

    def needs_fallback(self, r: WindowResult) -> bool:
        opts = self.options
        silent = (
            opts.logprob_threshold is not None
            and r.no_speech_prob > opts.no_speech_threshold
            and r.avg_logprob < opts.logprob_threshold
        )
        if silent:  # whisper's rule: a silent window is dropped later, not decoded again
            return False
        if r.looped:
            return True
        if opts.compression_ratio_threshold is not None and r.compression_ratio > opts.compression_ratio_threshold:
            return True
        return opts.logprob_threshold is not None and r.avg_logprob < opts.logprob_threshold

    # ---------------------------------------------------------------- batch loop

    @torch.inference_mode()
    def _run(self, windows, indices: list[int], temperature: float) -> dict[int, WindowResult]:
        opts = self.options
        if temperature == 0.0 and opts.beam_size > 1:
            return self._run_beam(windows, indices)
        pending = deque(indices)
        size = min(opts.batch_size, len(indices))
        st = self._alloc(size, graph=self._use_graphs and temperature == 0.0)
        out: dict[int, WindowResult] = {}
        refill_at = max(1, size // 8)  # refill in groups so the encoder runs on several windows
        while True:
            free = [s for s, item in enumerate(st.items) if item < 0]
            if pending and (len(free) >= min(refill_at, len(pending)) or len(free) == st.size):
                take = [pending.popleft() for _ in range(min(len(free), len(pending)))]
                self._fill(st, free[: len(take)], [windows[i] for i in take])
                for s, i in zip(free, take):
                    st.items[s] = i
            live = sum(1 for i in st.items if i >= 0)
            if not live:
                break
            if not pending and live <= st.size // 2:
                st = self._compact(st, graph=st.graph is not None)
            for _ in range(opts.sync_every):
                if st.graph is not None:
                    st.graph.replay()
                else:
                    self._step(st, temperature)
            self._harvest(st, temperature, out)
        return out

    def _run_beam(self, windows, indices: list[int]) -> dict[int, WindowResult]:
        """Beam search (:mod:`qa.asr.beam`): each window takes ``beam_size`` consecutive slots;
        the model step runs on the device, the choice of beams on the host after every step
        (it needs the proposals of every beam of a window). Freed groups are refilled with the
        next windows, and the batch is compacted to the live groups at the end."""
        beam = self.options.beam
        k = beam.beam_size
        pending = deque(indices)
        n_groups = max(1, min(self.options.batch_size // k, len(indices)))
        st = self._alloc(n_groups * k, graph=False)
        groups: list[Group | None] = [None] * n_groups
        out: dict[int, WindowResult] = {}
        refill_at = max(1, n_groups // 8)
        while True:
            free = [g for g, grp in enumerate(groups) if grp is None]
            if pending and (len(free) >= min(refill_at, len(pending)) or len(free) == len(groups)):
                take = [pending.popleft() for _ in range(min(len(free), len(pending)))]
                self._fill(st, [g * k + j for g in free[:len(take)] for j in range(k)],
                           [windows[i] for i in take], repeat=k)
                for g, i in zip(free, take):
                    groups[g] = Group(i, [[] for _ in range(k)])
                    st.items[g * k:(g + 1) * k] = [i] * k
            live = [g for g, grp in enumerate(groups) if grp is not None]
            if not live:
                break
            if not pending and len(live) <= len(groups) // 2:
                st, groups = self._compact_groups(st, groups, k)
                live = [g for g, grp in enumerate(groups) if grp is not None]
            logprobs = F.log_softmax(self._filter(st, self._forward(st)), dim=-1)
            own = None
            if self._trie is None:
                top_lp, top_tok = logprobs.topk(k + 1, dim=-1)
            else:  # shallow fusion: continuing a hotword earns the bonus, leaving one early gives it back
                adjusted = logprobs - self._trie.leaving_penalty(st.bias_node, st.bias_earned)[:, None]
                follow = self._trie.bonus_tokens(st.bias_node)
                adjusted.scatter_(1, follow, logprobs.gather(1, follow) + self.options.hotword_bonus)
                top_lp, top_tok = adjusted.topk(k + 1, dim=-1)
                own = (st.true_lp[:, None] + logprobs.gather(1, top_tok)).cpu().numpy()
            scores = (st.sum_lp[:, None] + top_lp).cpu().numpy()
            tokens = top_tok.cpu().numpy()
            n_gen = st.n_gen.cpu().tolist()
            sources = list(range(st.size))
            nxt = st.cur.cpu().tolist()
            sums = st.sum_lp.cpu().tolist()
            own_sums = st.true_lp.cpu().tolist()
            ended: list[int] = []
            for g in live:
                grp, rows = groups[g], slice(g * k, (g + 1) * k)
                step = advance(grp, beam, scores[rows], tokens[rows], self.eot, first=n_gen[g * k] == 0,
                               at_limit=n_gen[g * k] + 1 >= self.max_new, logprobs=None if own is None else own[rows])
                for j in range(k):
                    sources[g * k + j] = g * k + step.sources[j]
                    nxt[g * k + j], sums[g * k + j] = step.tokens[j], step.sums[j]
                    own_sums[g * k + j] = step.logprobs[j]
                if step.done:
                    ended.append(g)
            self._advance_beams(st, sources, nxt, sums, own_sums)
            for g in ended:
                grp = groups[g]
                best, logprob = best_sequence(grp, beam, sums[g * k:(g + 1) * k], self.eot,
                                              own_sums[g * k:(g + 1) * k])
                st.sum_lp[g * k] = logprob  # what _result reports: the model's own log-probs
                out[grp.item] = self._result(best, st, g * k, 0.0, looped=False)
                groups[g] = None
                st.items[g * k:(g + 1) * k] = [-1] * k
                st.done[g * k:(g + 1) * k] = True
        return out

    def _advance_beams(self, st: _State, sources: list[int], tokens: list[int], sums: list[float],
                       own_sums: list[float]) -> None:
        """Reorder the slots to their source beams (caches, generated tokens and hotword state
        of the rows whose beam changed) and append each slot's token."""
        dev = self.device
        moved = [r for r, s in enumerate(sources) if r != s]
        if moved:
            dst = torch.tensor(moved, device=dev)
            src = torch.tensor([sources[r] for r in moved], device=dev)
            for t in (*st.self_k, *st.self_v, st.out, st.bias_node, st.bias_earned):
                t[dst] = t[src]  # the right side is gathered first: no row is overwritten early
        live = ~st.done
        rows = torch.arange(st.size, device=dev)
        nxt = torch.tensor(tokens, device=dev)
        slot = st.n_gen.clamp(max=self.max_new - 1)
        st.out[rows, slot] = torch.where(live, nxt, st.out[rows, slot])
        st.sum_lp.copy_(torch.where(live, torch.tensor(sums, device=dev, dtype=torch.float32), st.sum_lp))
        st.true_lp.copy_(torch.where(live, torch.tensor(own_sums, device=dev, dtype=torch.float32), st.true_lp))
        if self._trie is not None:
            node, _, earning = self._trie.advance(st.bias_node, nxt)
            earned = torch.where(earning, st.bias_earned + self.options.hotword_bonus, torch.zeros_like(st.bias_earned))
            st.bias_node.copy_(torch.where(live, node, st.bias_node))
            st.bias_earned.copy_(torch.where(live, earned, st.bias_earned))
        st.n_gen += live
        st.cur.copy_(torch.where(live, nxt, st.cur))
        st.pos.copy_((st.pos + live).clamp(max=self.cache_len - 1))

    def _compact_groups(self, st: _State, groups: list[Group | None], k: int) -> tuple[_State, list[Group | None]]:
        live = [g for g, grp in enumerate(groups) if grp is not None]
        n = 1 << max(0, math.ceil(math.log2(len(live))))
        keep = [g * k + j for g in live + [live[0]] * (n - len(live)) for j in range(k)]
        new = self._gather(st, keep, n_live=len(live) * k)
        return new, [groups[g] for g in live] + [None] * (n - len(live))

    def _harvest(self, st: _State, temperature: float, out: dict[int, WindowResult]) -> None:
        """The one host synchronisation per ``sync_every`` steps: collect finished rows and stop
        rows caught in a repetition loop."""
        done = st.done.cpu().tolist()
        busy = [s for s, i in enumerate(st.items) if i >= 0]
        if self.options.loop_min_span and any(not done[s] for s in busy):
            live = [s for s in busy if not done[s]]
            rows = st.out[live].cpu().tolist()
            counts = st.n_gen[live].cpu().tolist()
            for s, row, n in zip(live, rows, counts):
                cut = find_loop(row[:n], self.options.loop_min_span)
                if cut is not None:
                    out[st.items[s]] = self._result(row[:cut], st, s, temperature, looped=True)
                    st.done[s] = True
                    st.items[s] = -1
        finished = [s for s in busy if done[s] and st.items[s] >= 0]
        if not finished:
            return
        idx = torch.tensor(finished, device=self.device)
        rows = st.out[idx].cpu().tolist()
        counts = st.n_gen[idx].cpu().tolist()
        for s, row, n in zip(finished, rows, counts):
            tokens = row[:n]
            if tokens and tokens[-1] == self.eot:
                tokens = tokens[:-1]
            out[st.items[s]] = self._result(tokens, st, s, temperature, looped=False)
            st.items[s] = -1

    def _result(self, tokens: list[int], st: _State, slot: int, temperature: float, *, looped: bool) -> WindowResult:
        text = self.tokenizer.decode(tokens).strip()
        return WindowResult(
            tokens=tuple(tokens),
            text=text,
            avg_logprob=float(st.sum_lp[slot]) / (len(tokens) + 1),
            no_speech_prob=float(st.no_speech[slot]),
            compression_ratio=compression_ratio(text),
            temperature=temperature,
            looped=looped,
        )

    # ---------------------------------------------------------------- state

    def _alloc(self, size: int, *, graph: bool) -> _State:
        d = self.dims
        dev, dt = self.device, self.dtype
        H, hd, L = self._heads, self._head_dim, self.cache_len

        def kv(length: int, dtype: torch.dtype = dt) -> list[torch.Tensor]:
            return [torch.zeros(size, H, length, hd, device=dev, dtype=dtype) for _ in range(d.n_text_layer)]

        def scales() -> list[torch.Tensor]:
            return [torch.ones(size, H, hd, device=dev, dtype=torch.float32) for _ in range(d.n_text_layer)]

        cross_dt = torch.uint8 if self._kv8 else torch.bfloat16 if self._cross_bf16 else dt
        st = _State(
            self_k=kv(L),
            self_v=kv(L),
            cross_k=kv(d.n_audio_ctx, cross_dt),
            cross_v=kv(d.n_audio_ctx, cross_dt),
            cross_k_scale=scales() if self._kv8 else [],
            cross_v_scale=scales() if self._kv8 else [],
            cur=torch.full((size,), self.eot, device=dev, dtype=torch.long),
            pos=torch.zeros(size, device=dev, dtype=torch.long),
            n_gen=torch.zeros(size, device=dev, dtype=torch.long),
            done=torch.ones(size, device=dev, dtype=torch.bool),
            sum_lp=torch.zeros(size, device=dev, dtype=torch.float32),
            no_speech=torch.zeros(size, device=dev, dtype=torch.float32),
            out=torch.full((size, self.max_new), self.eot, device=dev, dtype=torch.long),
            bias_node=torch.zeros(size, device=dev, dtype=torch.long),
            bias_earned=torch.zeros(size, device=dev, dtype=torch.float32),
            true_lp=torch.zeros(size, device=dev, dtype=torch.float32),
            items=[-1] * size,
        )
        if graph:
            st.graph = self._try_capture(st, live=False)
        return st

    def _try_capture(self, st: _State, *, live: bool):
        try:
            return self._capture_live(st) if live else self._capture(st)
        except RuntimeError as e:  # e.g. an op this torch build cannot capture: run eagerly
            log.warning("CUDA graph capture failed, decoding without graphs: %s", e)
            self._use_graphs = False
            return None

    def _capture(self, st: _State):
        """Capture one greedy step as a CUDA graph. All rows are ``done`` here, so the warm-up
        and captured steps change nothing a later fill does not overwrite."""
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for _ in range(2):
                self._step(st, 0.0)
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            self._step(st, 0.0)
        return graph

    def _compact(self, st: _State, *, graph: bool) -> _State:
        live = [s for s, i in enumerate(st.items) if i >= 0]
        size = 1 << max(0, math.ceil(math.log2(len(live))))
        new = self._gather(st, live + [live[0]] * (size - len(live)), n_live=len(live))
        if graph:
            new.graph = self._try_capture(new, live=True)
        return new

    def _gather(self, st: _State, rows: list[int], *, n_live: int) -> _State:
        """A new state of the slots ``rows`` of ``st``; rows past ``n_live`` are padding."""
        keep = torch.tensor(rows, device=self.device)
        size = len(rows)

        def pick(ts: list[torch.Tensor]) -> list[torch.Tensor]:
            return [t.index_select(0, keep) for t in ts]

        new = _State(
            self_k=pick(st.self_k),
            self_v=pick(st.self_v),
            cross_k=pick(st.cross_k),
            cross_v=pick(st.cross_v),
            cur=st.cur.index_select(0, keep),
            pos=st.pos.index_select(0, keep),
            n_gen=st.n_gen.index_select(0, keep),
            done=st.done.index_select(0, keep),
            sum_lp=st.sum_lp.index_select(0, keep),
            no_speech=st.no_speech.index_select(0, keep),
            out=st.out.index_select(0, keep),
            bias_node=st.bias_node.index_select(0, keep),
            bias_earned=st.bias_earned.index_select(0, keep),
            true_lp=st.true_lp.index_select(0, keep),
            items=[st.items[s] for s in rows[:n_live]] + [-1] * (size - n_live),
            cross_k_scale=pick(st.cross_k_scale),
            cross_v_scale=pick(st.cross_v_scale),
        )
        new.done[n_live:] = True  # padding rows duplicate a live row; keep them inert
        del st
        return new

    def _capture_live(self, st: _State):
        """Capture a step on a state that holds live rows: save and restore what the warm-up
        steps change so no row is advanced by the capture."""
        tensors = (st.cur, st.pos, st.n_gen, st.done, st.sum_lp, st.out, st.bias_node)
        saved = [t.clone() for t in tensors]
        try:
            return self._capture(st)
        finally:
            for t, s in zip(tensors, saved):
                t.copy_(s)

    # ---------------------------------------------------------------- model math

    def _encode(self, windows: Sequence[np.ndarray | torch.Tensor]) -> torch.Tensor:
        audio = torch.stack([_pad_window(w) for w in windows]).to(self.device)
        mel = log_mel_batch(audio, self.dims.n_mels)
        return self.model.encoder(mel.to(self.dtype))

    def _fill(self, st: _State, slots: list[int], windows: list, repeat: int = 1) -> None:
        """Put new windows into free slots: encoder, cross-attention K/V once, and the prompt
        prefill of all but its last token (the next step feeds that one). With ``repeat``,
        each window fills that many consecutive slots (its beams), encoded once."""
        step = self.options.encoder_batch
        for start in range(0, len(windows), step):
            self._fill_chunk(st, slots[start * repeat:(start + step) * repeat], windows[start:start + step], repeat)

    def _fill_chunk(self, st: _State, slots: list[int], windows: list, repeat: int = 1) -> None:
        dec = self.model.decoder
        R, H, hd = len(slots), self._heads, self._head_dim
        rows = torch.tensor(slots, device=self.device)
        audio_features = self._encode(windows)
        if repeat > 1:
            audio_features = audio_features.repeat_interleave(repeat, dim=0)
        P = self.n_prompt - 1
        x = dec.token_embedding(self._prompt[:P]) + dec.positional_embedding[:P]
        x = x.to(self.dtype).unsqueeze(0).expand(R, P, -1)

        def heads(t: torch.Tensor) -> torch.Tensor:
            return t.view(t.shape[0], t.shape[1], H, hd).transpose(1, 2)

        for i, block in enumerate(dec.blocks):
            ck = heads(block.cross_attn.key(audio_features))
            cv = heads(block.cross_attn.value(audio_features))
            if self._kv8:  # quantised once per window; the prompt prefill below stays exact
                st.cross_k[i][rows], st.cross_k_scale[i][rows] = self._attention8.quantize_kv(ck, self._kv8)
                st.cross_v[i][rows], st.cross_v_scale[i][rows] = self._attention8.quantize_kv(cv, self._kv8)
            else:
                st.cross_k[i][rows] = ck.to(st.cross_k[i].dtype)
                st.cross_v[i][rows] = cv.to(st.cross_v[i].dtype)
            h = block.attn_ln(x)
            q, k, v = heads(block.attn.query(h)), heads(block.attn.key(h)), heads(block.attn.value(h))
            st.self_k[i][rows, :, :P] = k
            st.self_v[i][rows, :, :P] = v
            a = F.scaled_dot_product_attention(q, k, v, is_causal=P > 1)
            x = x + block.attn.out(a.transpose(1, 2).reshape(R, P, -1))
            h = block.cross_attn_ln(x)
            a = F.scaled_dot_product_attention(heads(block.cross_attn.query(h)), ck, cv)
            x = x + block.cross_attn.out(a.transpose(1, 2).reshape(R, P, -1))
            x = x + block.mlp(block.mlp_ln(x))
        if self.no_speech_token is not None:
            at_sot = self._logits(dec.ln(x[:, self.sot_index]))
            st.no_speech[rows] = at_sot.float().softmax(dim=-1)[:, self.no_speech_token]
        else:
            st.no_speech[rows] = 0.0
        st.cur[rows] = self._prompt[P]
        st.pos[rows] = P
        st.n_gen[rows] = 0
        st.sum_lp[rows] = 0.0
        st.out[rows] = self.eot
        st.bias_node[rows] = 0
        st.bias_earned[rows] = 0.0
        st.true_lp[rows] = 0.0
        st.done[rows] = False

    def _step(self, st: _State, temperature: float) -> None:
        """Advance every slot by one token, entirely on the device."""
        rows = torch.arange(st.size, device=self.device)
        self._select(st, self._forward(st), temperature, rows)

    def _forward(self, st: _State) -> torch.Tensor:
        """The next-token logits of every slot ([B, vocab], float32); fills the self-attention
        caches at each slot's position."""
        dec = self.model.decoder
        B, H, hd = st.size, self._heads, self._head_dim
        rows = torch.arange(B, device=self.device)
        x = (dec.token_embedding(st.cur) + dec.positional_embedding[st.pos]).to(self.dtype).unsqueeze(1)
        mask = (self._key_pos[None, :] <= st.pos[:, None])[:, None, None, :]
        for i, block in enumerate(dec.blocks):
            h = block.attn_ln(x)
            q = block.attn.query(h).view(B, 1, H, hd).transpose(1, 2)
            st.self_k[i][rows, :, st.pos] = block.attn.key(h).view(B, H, hd)
            st.self_v[i][rows, :, st.pos] = block.attn.value(h).view(B, H, hd)
            a = F.scaled_dot_product_attention(q, st.self_k[i], st.self_v[i], attn_mask=mask)
            x = x + block.attn.out(a.transpose(1, 2).reshape(B, 1, -1))
            h = block.cross_attn_ln(x)
            if self._kv8:
                a = self._attention8.cross_attention(
                    block.cross_attn.query(h).view(B, H, hd), st.cross_k[i], st.cross_v[i],
                    st.cross_k_scale[i], st.cross_v_scale[i], self._kv8,
                )
                x = x + block.cross_attn.out(a.view(B, 1, -1))
            else:
                q = block.cross_attn.query(h).view(B, 1, H, hd).transpose(1, 2)
                if self._cross_bf16:
                    a = cross_attention_bf16(q, st.cross_k[i], st.cross_v[i])
                else:  # torch's fused kernel beat explicit matrix-vector products on an H100 (BENCHMARKS.md)
                    a = F.scaled_dot_product_attention(q, st.cross_k[i], st.cross_v[i])
                x = x + block.cross_attn.out(a.transpose(1, 2).reshape(B, 1, -1))
            x = x + block.mlp(block.mlp_ln(x))
        return self._logits(dec.ln(x[:, 0])).float()

    def _filter(self, st: _State, logits: torch.Tensor) -> torch.Tensor:
        """whisper's logit filters, in place: suppressed tokens, blank and end-of-text at the
        first step, end-of-text before ``min_new_tokens``."""
        neg_inf = self._neg_inf
        logits.index_fill_(1, self._suppress, -math.inf)
        first = (st.n_gen == 0)[:, None]
        logits[:, self._blank] = torch.where(first, neg_inf, logits[:, self._blank])
        if self.options.min_new_tokens:
            early = st.n_gen < self.options.min_new_tokens
            logits[:, self.eot] = torch.where(early, neg_inf, logits[:, self.eot])
        return logits

    def _select(self, st: _State, logits: torch.Tensor, temperature: float, rows: torch.Tensor) -> None:
        logits = self._filter(st, logits)
        choice = logits
        if self._trie is not None:  # the bonus steers the choice; the recorded log-probs stay the model's
            bonus = torch.zeros_like(logits).scatter_(1, self._trie.bonus_tokens(st.bias_node),
                                                      self.options.hotword_bonus)
            choice = logits + bonus
        if temperature == 0.0:
            nxt = choice.argmax(dim=-1)
        else:
            # Gumbel-max draws from softmax(logits / T) without leaving the device
            u = torch.rand(logits.shape, device=logits.device, generator=self._generator).clamp_(1e-20, 1.0)
            nxt = (choice / temperature - torch.log(-torch.log(u))).argmax(dim=-1)
        logprobs = F.log_softmax(logits, dim=-1)
        live = ~st.done
        if self._trie is not None:
            node, _ = self._trie.step(st.bias_node, nxt)
            st.bias_node.copy_(torch.where(live, node, st.bias_node))
        st.sum_lp += logprobs.gather(1, nxt[:, None])[:, 0] * live
        nxt = torch.where(live, nxt, self._eot)
        slot = st.n_gen.clamp(max=self.max_new - 1)
        st.out[rows, slot] = torch.where(live, nxt, st.out[rows, slot])
        st.n_gen += live
        st.done |= (nxt == self.eot) | (st.n_gen >= self.max_new)
        st.cur.copy_(nxt)
        st.pos.copy_((st.pos + live).clamp(max=self.cache_len - 1))


def best_attempt(tried: Sequence[WindowResult], compression_ratio_threshold: float | None) -> WindowResult:
    """Of a window's attempts that all failed the checks, the one with the highest average
    log-probability among those that neither looped nor exceed the compression ratio (among
    all when none qualifies). Whisper's ``transcribe`` keeps the last attempt, the sample at the
    highest temperature, which on hard audio is usually the worst."""
    sane = [r for r in tried if not r.looped and (compression_ratio_threshold is None
                                                 or r.compression_ratio <= compression_ratio_threshold)]
    return max(sane or tried, key=lambda r: r.avg_logprob)


def _load_kv8(fmt: str, device: torch.device, head_dim: int):
    """The 8-bit cross-attention module, after checking that it can run here."""
    if device.type != "cuda":  # before importing Triton, which a CPU install may not have
        raise ValueError(f"cross_kv_dtype={fmt!r} needs a CUDA device, not {device.type}")
    try:
        from . import kv8_attention
    except ImportError as e:
        raise ValueError(f"cross_kv_dtype={fmt!r} needs Triton: {e}") from e
    kv8_attention.check_device(fmt, device, head_dim)
    return kv8_attention
