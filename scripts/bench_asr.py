"""ASR speed benchmark.

``gpu``: random weights of the real Whisper architectures, the same full 30 s windows decoded
with a fixed number of tokens (end-of-text suppressed) through (1) stock openai-whisper, one
window per ``whisper.decode`` call as ``transcribe()`` does, (2) Hugging Face
``WhisperForConditionalGeneration.generate`` in large fp16 SDPA batches, (3) ``qa.asr.engine``,
with its cross-attention K/V in the model's dtype and optionally in 8 bits (``--kv fp8 int8``:
also the share of windows whose greedy tokens equal the 16-bit run's, and the 8-bit kernel alone
against SDPA with ``--kernel-bench``). Prints audio-seconds per wall-second, the ratios and a
roofline from measured device ceilings.

``cpu``: the real base weights over audio_samples/ (VAD segments of every channel), ours (VAD
segments packed into shared windows, and one segment per window) vs
stock ``whisper.transcribe`` vs faster-whisper int8 (CTranslate2 files joined from the registry
packages): audio-seconds per wall-second and CER.

Run: python scripts/bench_asr.py gpu --json out.json / python scripts/bench_asr.py cpu
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from qa.asr.engine import CROSS_KV_DTYPES, BatchedDecoder, DecodeOptions, log_mel_batch  # noqa: E402
from qa.asr.weights import ARCHITECTURES, random_model, to_inference  # noqa: E402
from qa.config import FINANCE_HOTWORDS  # noqa: E402

WINDOW_S = 30.0


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def windows(n: int, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(480000, generator=g) * 0.1 for _ in range(n)]


def eot_of(model) -> int:
    import whisper.tokenizer

    return whisper.tokenizer.get_tokenizer(model.is_multilingual, num_languages=model.num_languages).eot


def run_stock(model, wins, tokens: int) -> float:
    """One window per decode call, as whisper.transcribe does."""
    import whisper

    opts = whisper.DecodingOptions(
        language="zh", without_timestamps=True, fp16=True, sample_len=tokens,
        suppress_tokens=[-1, eot_of(model)], suppress_blank=True,
    )
    sync()
    t = time.perf_counter()
    for w in wins:
        mel = whisper.log_mel_spectrogram(w.cuda(), n_mels=model.dims.n_mels)
        res = whisper.decode(model, mel, opts)
        assert len(res.tokens) == tokens, len(res.tokens)
    sync()
    return time.perf_counter() - t


def run_ours(model, wins, tokens: int, batch: int, kv: str = "model") -> tuple[float, list[tuple[int, ...]]]:
    dec = BatchedDecoder(model, DecodeOptions(
        batch_size=batch, max_new_tokens=tokens, min_new_tokens=tokens, temperatures=(0.0,),
        loop_min_span=0, sync_every=16, encoder_batch=32, cross_kv_dtype=kv,
    ))
    sync()
    t = time.perf_counter()
    res = dec.decode([w.cuda() for w in wins])
    sync()
    elapsed = time.perf_counter() - t
    assert len(res) == len(wins) and all(len(r.tokens) == tokens for r in res), [len(r.tokens) for r in res][:4]
    return elapsed, [r.tokens for r in res]


def agreement(ref: list[tuple[int, ...]], got: list[tuple[int, ...]]) -> dict:
    """How many windows decode to the same greedy tokens, and where the others first differ."""
    first = sorted(next(k for k, (x, y) in enumerate(zip(a, b)) if x != y) for a, b in zip(ref, got) if a != b)
    return {"windows": len(ref), "identical": len(ref) - len(first), "first_divergence": first,
            "median_first_divergence": first[len(first) // 2] if first else None}


def hf_model(arch: str):
    from transformers import WhisperConfig, WhisperForConditionalGeneration

    a = ARCHITECTURES[arch]
    cfg = WhisperConfig(
        vocab_size=a["n_vocab"], num_mel_bins=a["n_mels"], d_model=a["n_audio_state"],
        encoder_layers=a["n_audio_layer"], decoder_layers=a["n_text_layer"],
        encoder_attention_heads=a["n_audio_head"], decoder_attention_heads=a["n_text_head"],
        encoder_ffn_dim=4 * a["n_audio_state"], decoder_ffn_dim=4 * a["n_text_state"],
        max_source_positions=1500, max_target_positions=448,
        decoder_start_token_id=50258, eos_token_id=50257, pad_token_id=50257, bos_token_id=50257,
    )
    cfg._attn_implementation = "sdpa"
    torch.manual_seed(0)
    model = WhisperForConditionalGeneration(cfg).to("cuda", torch.float16).eval()
    print(f"HF attention: {model.config._attn_implementation}", flush=True)
    return model


def run_hf(model, wins, tokens: int, batch: int, n_mels: int, plain: bool = False) -> float:
    """``plain``: the generic GenerationMixin loop instead of Whisper's generate wrapper."""
    from transformers.generation.utils import GenerationMixin

    generate = (lambda **kw: GenerationMixin.generate(model, **kw)) if plain else model.generate
    prompt = torch.tensor([[50258, 50260, 50359, 50363]], device="cuda")  # sot, zh, transcribe, notimestamps
    sync()
    t = time.perf_counter()
    for start in range(0, len(wins), batch):
        chunk = torch.stack(wins[start : start + batch]).cuda()
        feats = log_mel_batch(chunk, n_mels).half()
        with torch.inference_mode():
            out = generate(
                input_features=feats, decoder_input_ids=prompt.expand(len(chunk), -1),
                max_new_tokens=tokens, min_new_tokens=tokens, do_sample=False, num_beams=1,
            )
        assert out.shape[1] >= tokens, out.shape
    sync()
    return time.perf_counter() - t


def ceilings() -> dict:
    """Measured device ceilings: copy bandwidth (read+write) and fp16 matmul rate."""
    x = torch.empty(2 * 1024**3 // 2, dtype=torch.float16, device="cuda").normal_()
    y = torch.empty_like(x)
    for _ in range(3):
        y.copy_(x)
    sync()
    t = time.perf_counter()
    for _ in range(10):
        y.copy_(x)
    sync()
    bw = 10 * 2 * x.numel() * 2 / (time.perf_counter() - t)
    del x, y
    a = torch.randn(8192, 8192, device="cuda", dtype=torch.float16)
    b = torch.randn(8192, 8192, device="cuda", dtype=torch.float16)
    for _ in range(3):
        a @ b
    sync()
    t = time.perf_counter()
    for _ in range(10):
        a @ b
    sync()
    flops = 10 * 2 * 8192**3 / (time.perf_counter() - t)
    return {"bandwidth_Bps": bw, "matmul_flops": flops}


def kernel_bench(batch: int = 256, heads: int = 20, T: int = 1500, D: int = 64) -> dict:
    """One layer's one-token cross-attention at a large batch: torch's SDPA on fp16 K/V against
    the 8-bit kernel, median times and the bytes per second each reads (K/V, scales, query)."""
    import triton.testing

    from qa.asr import kv8_attention

    g = torch.Generator(device="cuda").manual_seed(0)
    k = torch.randn(batch, heads, T, D, device="cuda", generator=g, dtype=torch.float16)
    v = torch.randn(batch, heads, T, D, device="cuda", generator=g, dtype=torch.float16)
    q = torch.randn(batch, heads, D, device="cuda", generator=g, dtype=torch.float16)
    sdpa = lambda: torch.nn.functional.scaled_dot_product_attention(q[:, :, None], k, v)  # noqa: E731
    ms = triton.testing.do_bench(sdpa, warmup=50, rep=300, return_mode="median")
    out = {"shape": [batch, heads, T, D], "sdpa_fp16_ms": ms, "sdpa_fp16_TBps": 2 * k.numel() * 2 / ms / 1e9}
    ref = sdpa()[:, :, 0].float()
    for fmt in kv8_attention.FORMATS:
        k8, ks = kv8_attention.quantize_kv(k, fmt)
        v8, vs = kv8_attention.quantize_kv(v, fmt)
        run = lambda: kv8_attention.cross_attention(q, k8, v8, ks, vs, fmt)  # noqa: E731
        err = ((run().float() - ref).norm() / ref.norm()).item()
        ms = triton.testing.do_bench(run, warmup=50, rep=300, return_mode="median")
        out[fmt] = {"ms": ms, "TBps": (2 * k8.numel() + 2 * ks.numel() * 4) / ms / 1e9, "rel_err_vs_fp16": err}
    print(f"kernel: {json.dumps(out)}", flush=True)
    return out


def roofline(arch: str, batch: int, tokens: int, prompt: int, ceil: dict, kv_bytes: int = 2) -> dict:
    """Lower bound on time per window: encoder FLOPs at the matmul rate plus, per decoded
    token, the bytes every row must read (its cross-attention K/V, ``kv_bytes`` per value, and
    self-attention K/V) plus the decoder weights shared by the batch, at the copy bandwidth."""
    a = ARCHITECTURES[arch]
    D, Le, Ld, V, T = a["n_audio_state"], a["n_audio_layer"], a["n_text_layer"], a["n_vocab"], 1500
    enc_params = Le * 12 * D * D
    enc_flops = 2 * enc_params * T + Le * 4 * T * T * D + 2 * 3 * D * a["n_mels"] * 3000 + 2 * 3 * D * D * T
    cross_kv_flops = 2 * Ld * 2 * D * D * T  # computed once per window
    cross_bytes = Ld * 2 * T * D * kv_bytes
    self_bytes = Ld * 2 * (prompt + tokens / 2) * D * 2  # average cache length
    dec_weight_bytes = (Ld * 16 * D * D + V * D) * 2
    per_token = cross_bytes + self_bytes + dec_weight_bytes / batch
    t_enc = (enc_flops + cross_kv_flops) / ceil["matmul_flops"]
    t_dec = tokens * per_token / ceil["bandwidth_Bps"]
    return {
        "encoder_gflop_per_window": (enc_flops + cross_kv_flops) / 1e9,
        "decoder_mb_per_token_row": per_token / 1e6,
        "cross_kv_mb_per_row": cross_bytes / 1e6,
        "ms_per_window": 1e3 * (t_enc + t_dec),
        "x_realtime": WINDOW_S / (t_enc + t_dec),
    }


def correctness(n: int = 24, tokens: int = 96) -> list[dict]:
    """Greedy tokens of ours vs stock whisper.decode on the same windows, random base model."""
    import whisper

    rows = []
    for dtype in (torch.float32, torch.float16):
        model = to_inference(random_model("base", seed=1, std=0.08), "cuda", dtype)
        wins = windows(n, seed=7)
        for i, w in enumerate(wins):  # shorter windows too: zero tail
            w[int(480000 * (0.2 + 0.8 * i / n)) :] = 0
        opts = whisper.DecodingOptions(language="zh", without_timestamps=True, fp16=dtype == torch.float16, sample_len=tokens)
        ref = [whisper.decode(model, whisper.log_mel_spectrogram(w.cuda()), opts) for w in wins]
        dec = BatchedDecoder(model, DecodeOptions(batch_size=8, max_new_tokens=tokens, temperatures=(0.0,), loop_min_span=0, sync_every=5))
        ours = dec.decode([w.cuda() for w in wins])
        equal = sum(list(o.tokens) == r.tokens for o, r in zip(ours, ref))
        first_diff = [
            next((k for k, (x, y) in enumerate(zip(o.tokens, r.tokens)) if x != y), min(len(o.tokens), len(r.tokens)))
            for o, r in zip(ours, ref) if list(o.tokens) != r.tokens
        ]
        rows.append({"dtype": str(dtype), "windows": n, "equal": equal, "first_divergence_at": first_diff})
        print(f"correctness {dtype}: {equal}/{n} windows with identical greedy tokens; diverging at {first_diff}", flush=True)
        del model
    return rows


def gpu(args) -> dict:
    import whisper

    torch.backends.cuda.matmul.allow_tf32 = False
    report: dict = {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "whisper": whisper.__version__}
    try:
        import transformers

        report["transformers"] = transformers.__version__
    except ImportError:
        report["transformers"] = None
    report["ceilings"] = ceil = ceilings()
    print(f"ceilings: {ceil['bandwidth_Bps'] / 1e12:.2f} TB/s copy, {ceil['matmul_flops'] / 1e12:.0f} TFLOP/s fp16 matmul", flush=True)
    if args.correctness:
        report["correctness"] = correctness()
    if args.kernel_bench:
        report["kernel"] = kernel_bench()
    report["archs"] = {}
    tokens = args.tokens

    def save() -> None:  # after every measurement: a later one may fail or run out of time
        if args.json:
            Path(args.json).write_text(json.dumps(report, indent=1, default=str), encoding="utf-8")

    for arch in args.archs:
        # 16-bit cross K/V of large-v3 at 512 rows (126 GB) does not fit on an 80 GB card; 8-bit does
        batches16 = [b for b in args.batches if arch in ("base", "large-v3-turbo") or b <= 256]
        res: dict = {"batches": {b: {} for b in args.batches}}
        report["archs"][arch] = res
        for b in args.batches:
            res["batches"][b]["roofline"] = roofline(arch, b, tokens, 4, ceil)
            res["batches"][b]["roofline_8bit"] = roofline(arch, b, tokens, 4, ceil, kv_bytes=1)
        model = to_inference(random_model(arch, seed=0), "cuda", torch.float16)
        wins = windows(max(args.batches), seed=1)
        for kv in args.kv:
            run_ours(model, wins[:8], tokens, 8, kv)  # warm-up: kernels, cuBLAS handles
        n_stock = args.stock_windows
        if n_stock:
            run_stock(model, wins[:1], tokens)
            t = run_stock(model, wins[:n_stock], tokens)
            res["stock_xrt"] = n_stock * WINDOW_S / t
            print(f"{arch}: stock openai-whisper {res['stock_xrt']:.1f}x realtime ({n_stock} windows)", flush=True)
        for b in args.batches:
            tokens_16 = None
            for kv in args.kv:
                key = "ours_xrt" if kv == "model" else f"ours_{kv}_xrt"
                if kv == "model" and b not in batches16:
                    continue
                try:
                    run_ours(model, wins[:b], tokens, b, kv)  # warm-up at this shape
                    t, got = run_ours(model, wins[:b], tokens, b, kv)
                    res["batches"][b][key] = b * WINDOW_S / t
                except torch.OutOfMemoryError:
                    res["batches"][b][key], got = None, None
                torch.cuda.empty_cache()
                if kv == "model":
                    tokens_16 = got
                elif tokens_16 and got:
                    res["batches"][b][f"agreement_{kv}"] = agreement(tokens_16, got)
                    a = res["batches"][b][f"agreement_{kv}"]
                    print(f"{arch}: {kv} vs 16-bit batch {b}: {a['identical']}/{a['windows']} windows identical, "
                          f"median first divergence at token {a['median_first_divergence']}", flush=True)
                print(f"{arch}: ours ({kv} cross K/V) batch {b}: {res['batches'][b][key]}", flush=True)
                save()
        del model
        torch.cuda.empty_cache()
        if not args.no_hf:
            hf = hf_model(arch)
            run_hf(hf, wins[:8], tokens, 8, ARCHITECTURES[arch]["n_mels"])
            hf_batches = [b for b in batches16 if not args.hf_batches or b in args.hf_batches]
            for b in [] if args.hf_plain_only else hf_batches:
                try:
                    t = run_hf(hf, wins[:b], tokens, b, ARCHITECTURES[arch]["n_mels"])
                    res["batches"][b]["hf_xrt"] = b * WINDOW_S / t
                except torch.OutOfMemoryError:
                    res["batches"][b]["hf_xrt"] = None
                torch.cuda.empty_cache()
                print(f"{arch}: HF batch {b}: {res['batches'][b]['hf_xrt']}", flush=True)
                save()
            for b in hf_batches[-2:]:  # the generic loop at the large batches, best of the two kept
                try:
                    t = run_hf(hf, wins[:b], tokens, b, ARCHITECTURES[arch]["n_mels"], plain=True)
                    res["batches"][b]["hf_plain_xrt"] = b * WINDOW_S / t
                except torch.OutOfMemoryError:
                    res["batches"][b]["hf_plain_xrt"] = None
                torch.cuda.empty_cache()
                print(f"{arch}: HF plain generate batch {b}: {res['batches'][b]['hf_plain_xrt']}", flush=True)
                save()
            del hf
            torch.cuda.empty_cache()
    print_table(report)
    return report


def print_table(report: dict) -> None:
    print(f"\n{report['device']}  torch {report['torch']}  transformers {report.get('transformers')}")
    print(f"{'arch':16} {'batch':>5} {'stock':>8} {'HF':>8} {'ours':>8} {'fp8':>8} {'int8':>8} {'best/HF':>8} "
          f"{'roof16':>7} {'%':>4} {'roof8':>7} {'%':>4}")
    for arch, res in report["archs"].items():
        for b, row in res["batches"].items():
            hf = max(row.get("hf_xrt") or 0, row.get("hf_plain_xrt") or 0) or None
            ours, fp8, int8 = (row.get(k) or 0 for k in ("ours_xrt", "ours_fp8_xrt", "ours_int8_xrt"))
            roof, roof8 = row["roofline"]["x_realtime"], row["roofline_8bit"]["x_realtime"]
            best8 = max(fp8, int8)
            ratio = f"{max(ours, best8) / hf:.2f}" if hf and max(ours, best8) else "-"
            pct = f"{100 * ours / roof:.0f}" if ours else "-"
            pct8 = f"{100 * best8 / roof8:.0f}" if best8 else "-"
            print(f"{arch:16} {b:>5} {res.get('stock_xrt', 0):>8.1f} {hf or 0:>8.0f} {ours:>8.0f} {fp8:>8.0f} "
                  f"{int8:>8.0f} {ratio:>8} {roof:>7.0f} {pct:>4} {roof8:>7.0f} {pct8:>4}")


def _hypothesis(sample, n_channels: int, segments_per_channel) -> dict[str, str]:
    """Each channel's text in time order under its role, and every segment of the call in time
    order under "overall" (the order the reference turns are in)."""
    from qa.ingest.audio import channel_roles

    roles = channel_roles(sample.channel_layout, n_channels)
    out: dict[str, str] = {}
    timed = []
    for role, segs in zip(roles, segments_per_channel):
        out[role or "mixed"] = "".join(text for _, text in sorted(segs))
        timed += segs
    out["overall"] = "".join(text for _, text in sorted(timed))
    return out


def _score(samples, hyps: dict[str, dict[str, str]]) -> dict:
    """CER per role (stereo calls) and overall, with the same normalisation as qa eval asr."""
    from qa.asr.evaluate import Score

    roles = {"agent": Score(), "customer": Score()}
    overall = Score()
    for sample in samples:
        hyp = hyps[sample.call_id]
        turns = sorted(sample.turns, key=lambda t: t[2])
        for role in roles:
            if role in hyp:
                roles[role].add("".join(t[1] for t in turns if t[0] == role), hyp[role])
        overall.add("".join(t[1] for t in turns), hyp["overall"])
    return _cer_figures(roles["agent"], roles["customer"], overall)


def _cer_figures(agent, customer, overall) -> dict:
    """Per role, both roles pooled (errors over characters of the two channels), and overall."""
    from qa.asr.evaluate import Score

    both = Score(agent.errors + customer.errors, agent.chars + customer.chars)
    return {"cer_agent": agent.cer, "cer_customer": customer.cer, "cer_roles": both.cer, "cer_overall": overall.cer}


def _score_ours(report) -> dict:
    """Our evaluation report scored like the other engines: roles over the stereo calls only
    (theirs have no roles on a mono file; ours infers them, and those calls count in qa eval)."""
    from qa.asr.evaluate import Score

    stereo = [c for c in report.calls if c.channel_layout != "mono"]
    roles = {}
    for role in ("agent", "customer"):
        roles[role] = Score(sum(c.roles[role].errors for c in stereo if role in c.roles),
                            sum(c.roles[role].chars for c in stereo if role in c.roles))
    return _cer_figures(roles["agent"], roles["customer"], report.overall)


def _channels(decoded, sample) -> tuple[np.ndarray, ...]:
    """The channels an engine transcribes: a stereo file declared mono is mixed down first."""
    chans = decoded.channels
    if len(chans) > 1 and sample.channel_layout == "mono":
        chans = (np.mean(np.stack(chans), axis=0).astype(np.float32),)
    return chans


def run_stock_transcribe(settings, samples, audio, record) -> None:
    """Stock ``whisper.transcribe`` per channel, one window at a time (fp32, greedy + fallback)."""
    import whisper

    from qa.asr.weights import resolve_model

    prompt = FINANCE_HOTWORDS
    model = resolve_model(settings).model
    t = time.perf_counter()
    hyps = {}
    for s in samples:
        chans = _channels(audio[s.call_id], s)
        per = []
        for ch in chans:
            out = whisper.transcribe(model, ch, language="zh", initial_prompt=prompt or None, fp16=False,
                                     condition_on_previous_text=False)
            per.append([(seg["start"], seg["text"]) for seg in out["segments"]])
        hyps[s.call_id] = _hypothesis(s, len(chans), per)
    record("stock whisper.transcribe", time.perf_counter() - t, _score(samples, hyps))


def cpu(args) -> dict:
    """Ours vs stock whisper.transcribe vs faster-whisper int8 on the real base weights."""
    import dataclasses
    import os
    import platform

    import whisper

    from qa.asr.evaluate import evaluate_samples, read_samples
    from qa.asr.weights import write_ct2_dir
    from qa.config import load_settings
    from qa.ingest.audio import decode_file

    torch.set_num_threads(args.threads)
    settings = dataclasses.replace(load_settings().settings, asr_device="cpu", asr_threads=args.threads)
    samples = read_samples(args.samples)[: args.limit or None]
    audio = {s.call_id: decode_file(s.path) for s in samples}
    audio_s = sum(a.duration_s for a in audio.values())
    report: dict = {"cpu": platform.processor() or platform.machine(), "threads": args.threads, "calls": len(samples),
                    "audio_s": audio_s, "torch": torch.__version__, "whisper": whisper.__version__,
                    "loadavg_start": os.getloadavg()[0], "engines": {}}
    prompt = FINANCE_HOTWORDS

    def record(name: str, wall: float, scores: dict) -> None:
        report["engines"][name] = {"wall_s": wall, "x_realtime": audio_s / wall, **scores}
        print(f"{name:44} {audio_s / wall:6.2f}x realtime  CER agent {scores['cer_agent']:.3f} customer "
              f"{scores['cer_customer']:.3f} both roles {scores['cer_roles']:.3f} overall {scores['cer_overall']:.3f}",
              flush=True)

    from qa.asr.stage import compute_type, load_asr

    runs = [("packed <=30 s windows", 30.0, compute_type(settings))]
    runs += [] if "float32" in args.skip else [("packed <=30 s windows", 30.0, "model")]
    runs += [] if "unpacked" in args.skip else [("one VAD segment per window", 0.0, compute_type(settings))]
    for label, pack_s, kind in dict.fromkeys(runs):
        ours_settings = dataclasses.replace(settings, asr_pack_s=pack_s, asr_compute_type=kind)
        res = evaluate_samples(ours_settings, samples, asr=load_asr(ours_settings))
        record(f"ours ({label}, {'float32' if kind == 'model' else kind})", res.wall_s, _score_ours(res))
    if "stock" not in args.skip:
        run_stock_transcribe(settings, samples, audio, record)
    try:
        from faster_whisper import WhisperModel
    except ImportError:
        print("faster-whisper not installed (pip install -e .[bench]); skipped")
        return report
    ct2_dir = write_ct2_dir(Path(settings.cache_dir) / "models" / "whisper-base-ct2")
    fw = WhisperModel(str(ct2_dir), device="cpu", compute_type="int8", cpu_threads=args.threads)
    for beam in (1, 5):
        t = time.perf_counter()
        hyps = {}
        for s in samples:
            chans = _channels(audio[s.call_id], s)
            per = []
            for ch in chans:
                segs, _ = fw.transcribe(ch, language="zh", beam_size=beam, vad_filter=True,
                                        initial_prompt=prompt or None, condition_on_previous_text=False)
                per.append([(seg.start, seg.text) for seg in segs])
            hyps[s.call_id] = _hypothesis(s, len(chans), per)
        record(f"faster-whisper int8 beam {beam}", time.perf_counter() - t, _score(samples, hyps))
    report["loadavg_end"] = os.getloadavg()[0]
    return report


def telephone(audio: np.ndarray) -> np.ndarray:
    """Simulated telephone channel: 300-3400 Hz band, 8 kHz, G.711 mu-law round trip, back to 16 kHz."""
    from scipy.signal import butter, resample_poly, sosfiltfilt

    sos = butter(6, [300, 3400], btype="bandpass", fs=16000, output="sos")
    narrow = resample_poly(sosfiltfilt(sos, audio), 1, 2)
    mu = 255.0
    x = np.clip(narrow, -1.0, 1.0)
    code = np.round((np.sign(x) * np.log1p(mu * np.abs(x)) / np.log1p(mu) + 1) / 2 * 255)  # 8-bit code
    y = code / 255 * 2 - 1
    decoded = np.sign(y) * np.expm1(np.abs(y) * np.log1p(mu)) / mu
    return resample_poly(decoded, 2, 1).astype(np.float32)


def realspeech(args) -> dict:
    """CER of ours on a folder of real Mandarin clips (manifest.tsv: file, subset, transcript),
    native and through the simulated telephone channel. Evaluation only: nothing is kept."""
    import csv
    import dataclasses

    from qa.asr.stage import AsrOptions, load_asr
    from qa.config import load_settings
    from qa.ingest.audio import decode_file

    torch.set_num_threads(args.threads)
    settings = dataclasses.replace(load_settings().settings, asr_device="cpu", asr_threads=args.threads)
    root = Path(args.dir)
    with open(root / "manifest.tsv", encoding="utf-8", newline="") as fh:
        rows = list(csv.DictReader(fh, delimiter="\t"))
    clips = [np.mean(np.stack(decode_file(root / r["file"]).channels), axis=0).astype(np.float32) for r in rows]
    report: dict = {"clips": len(rows), "audio_s": sum(len(c) for c in clips) / 16000, "results": {}}
    base = load_asr(settings)
    for label, prompt in () if args.skip_ours else (("prompt", FINANCE_HOTWORDS), ("no prompt", "")):
        asr = load_asr(settings, dataclasses.replace(AsrOptions.from_settings(settings),
                                                     decode=dataclasses.replace(base.options.decode, prompt=prompt)))
        for channel in ("native", "telephone"):
            audio = clips if channel == "native" else [telephone(c) for c in clips]
            t = time.perf_counter()
            results = asr.decoder.decode(audio)
            wall = time.perf_counter() - t
            _record_realspeech(report, f"{label}, {channel}", rows, [res.text for res in results], wall)
    if args.faster_whisper:
        from faster_whisper import WhisperModel

        from qa.asr.weights import write_ct2_dir

        fw = WhisperModel(str(write_ct2_dir(Path(settings.cache_dir) / "models" / "whisper-base-ct2")),
                          device="cpu", compute_type="int8", cpu_threads=args.threads)
        for beam in (1, 5):
            for label, prompt in (("prompt", FINANCE_HOTWORDS), ("no prompt", "")):
                for channel in ("native", "telephone"):
                    audio = clips if channel == "native" else [telephone(c) for c in clips]
                    t = time.perf_counter()
                    texts = ["".join(seg.text for seg in fw.transcribe(
                        c, language="zh", beam_size=beam, initial_prompt=prompt or None,
                        condition_on_previous_text=False)[0]) for c in audio]
                    _record_realspeech(report, f"faster-whisper int8 beam {beam}, {label}, {channel}", rows, texts,
                                       time.perf_counter() - t)
    return report


def _record_realspeech(report: dict, key: str, rows: list[dict], texts: list[str], wall: float) -> None:
    from qa.asr.evaluate import Score
    from qa.asr.text import normalize_text

    by_subset: dict[str, Score] = {}
    total = Score()
    for row, text in zip(rows, texts):
        hyp = normalize_text(text)
        by_subset.setdefault(row["subset"], Score()).add(row["transcript"], hyp)
        total.add(row["transcript"], hyp)
    report["results"][key] = {"cer": total.cer, "wall_s": wall,
                              "by_subset": {k: v.cer for k, v in sorted(by_subset.items())}}
    print(f"{key:46} CER {total.cer:.3f}  " + "  ".join(f"{k} {v.cer:.3f}" for k, v in sorted(by_subset.items())),
          flush=True)


# --------------------------------------------------------------------------- policy

CONTEXTS = ("none", "prompt", "bias", "both")


def _hotword_counts(text: str, words: list[str]) -> dict[str, int]:
    return {w: text.count(w) for w in words}


def _context_figures(pairs: list[tuple[str, str]], words: list[str]) -> dict:
    """Hotword recall (occurrences said and written / said) and insertions (hotword characters
    written beyond what was said, per hypothesis character) over (reference, hypothesis) pairs
    in CER form."""
    said = written = inserted = chars = 0
    for ref, hyp in pairs:
        r, h = _hotword_counts(ref, words), _hotword_counts(hyp, words)
        said += sum(r.values())
        written += sum(min(r[w], h[w]) for w in words)
        inserted += sum(max(0, h[w] - r[w]) * len(w) for w in words)
        chars += len(hyp)
    return {"hotword_recall": written / said if said else None, "hotwords_said": said,
            "insertion_rate": inserted / chars if chars else 0.0, "inserted_chars": inserted}


def _digit_figures(pairs: list[tuple[str, str]]) -> dict:
    """Numbers read aloud in the references (qa.asr.numbers) that come out digit-exact."""
    from collections import Counter

    from qa.asr.numbers import numbers_in

    total = exact = 0
    missed = []
    for ref, hyp in pairs:
        have = Counter(numbers_in(hyp))
        for n in numbers_in(ref):
            total += 1
            if have[n] > 0:
                have[n] -= 1
                exact += 1
            else:
                missed.append(n)
    return {"numbers": total, "digit_exact": exact / total if total else None, "missed_numbers": missed}


def _decoder_settings(settings, context: str, beam: int):
    import dataclasses

    words = FINANCE_HOTWORDS
    return dataclasses.replace(settings, asr_prompt=words if context in ("prompt", "both") else "",
                               asr_hotwords=words if context in ("bias", "both") else "", asr_beam_size=beam)


def policy(args) -> dict:
    """CER, hotword recall, insertions and digit accuracy of every decoding policy (greedy or
    beam, with the prompt, hotword biasing, both or neither) on the sample calls and, with
    --realspeech, on real clips (native and through the telephone channel)."""
    import csv
    import dataclasses

    from qa.asr.evaluate import Score, cer_form, evaluate_samples, read_samples
    from qa.asr.stage import load_asr
    from qa.config import load_settings
    from qa.ingest.audio import decode_file

    torch.set_num_threads(args.threads)
    settings = dataclasses.replace(load_settings().settings, asr_device="cpu", asr_threads=args.threads,
                                   asr_hotword_bonus=args.bonus)
    words = [cer_form(w) for w in FINANCE_HOTWORDS.split()]
    samples = read_samples(args.samples)[: args.limit or None]
    clips, rows = [], []
    if args.realspeech:
        root = Path(args.realspeech)
        with open(root / "manifest.tsv", encoding="utf-8", newline="") as fh:
            rows = list(csv.DictReader(fh, delimiter="\t"))
        clips = [np.mean(np.stack(decode_file(root / r["file"]).channels), axis=0).astype(np.float32) for r in rows]
    report: dict = {"calls": len(samples), "clips": len(rows), "bonus": args.bonus, "results": {}}
    for beam in args.beams:
        for context in args.contexts:
            key = f"beam {beam}, {context}"
            ours_settings = _decoder_settings(settings, context, beam)
            asr = load_asr(ours_settings)
            res = evaluate_samples(ours_settings, samples, asr=asr)
            pairs = []
            for sample, call in zip(samples, res.calls):
                ref = "".join(t[1] for t in sorted(sample.turns, key=lambda t: t[2]))
                pairs.append((cer_form(ref), cer_form("".join(call.hypothesis.values()))))
            stereo = _score_ours(res)
            entry = {"samples": {"x_realtime": res.audio_s / res.wall_s, **stereo, **_context_figures(pairs, words),
                                 **_digit_figures(pairs), "pairs": pairs}}
            for channel in ("native", "telephone") if clips else ():
                audio = clips if channel == "native" else [telephone(c) for c in clips]
                t = time.perf_counter()
                texts = [r.text for r in asr.decoder.decode(audio)]
                wall = time.perf_counter() - t
                score = Score()
                clip_pairs = []
                for row, text in zip(rows, texts):
                    score.add(row["transcript"], text)
                    clip_pairs.append((cer_form(row["transcript"]), cer_form(text)))
                entry[channel] = {"cer": score.cer, "wall_s": wall, **_context_figures(clip_pairs, words),
                                  "pairs": clip_pairs}
            report["results"][key] = entry
            smp = entry["samples"]
            line = (f"{key:18} samples CER roles {smp['cer_roles']:.3f} overall {smp['cer_overall']:.3f} "
                    f"hotwords {smp['hotword_recall'] or 0:.3f} ins {100 * smp['insertion_rate']:.2f}% "
                    f"digits {smp['digit_exact'] or 0:.3f} ({smp['numbers']}) {smp['x_realtime']:.1f}x")
            for channel in ("native", "telephone"):
                if channel in entry:
                    e = entry[channel]
                    line += f" | real {channel} CER {e['cer']:.3f} ins {100 * e['insertion_rate']:.2f}%"
            print(line, flush=True)
            if args.json:  # after each policy: a long run stopped early keeps what it measured
                Path(args.json).write_text(json.dumps(report, indent=1, default=str), encoding="utf-8")
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    g = sub.add_parser("gpu")
    g.add_argument("--archs", nargs="+", default=["base", "small", "large-v3-turbo", "large-v3"])
    g.add_argument("--batches", nargs="+", type=int, default=[32, 64, 128, 256, 512])
    g.add_argument("--tokens", type=int, default=150)
    g.add_argument("--stock-windows", type=int, default=4)
    g.add_argument("--no-hf", action="store_true")
    g.add_argument("--correctness", action="store_true")
    g.add_argument("--kv", nargs="+", choices=CROSS_KV_DTYPES, default=["model"], help="ours' cross K/V storage")
    g.add_argument("--hf-batches", nargs="+", type=int, help="run HF at these batches only")
    g.add_argument("--hf-plain-only", action="store_true", help="HF's plain GenerationMixin loop only")
    g.add_argument("--kernel-bench", action="store_true")
    g.add_argument("--json")
    c = sub.add_parser("cpu")
    c.add_argument("--samples", default="audio_samples")
    c.add_argument("--limit", type=int, default=0)
    c.add_argument("--threads", type=int, default=2)
    c.add_argument("--skip", nargs="+", default=[], choices=["float32", "unpacked", "stock"],
                   help="leave out ours in float32, ours unpacked or stock whisper (the slow one)")
    c.add_argument("--json")
    p = sub.add_parser("policy")
    p.add_argument("--samples", default="audio_samples")
    p.add_argument("--realspeech", help="folder with manifest.tsv and real clips (evaluation only)")
    p.add_argument("--limit", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--beams", nargs="+", type=int, default=[1, 5])
    p.add_argument("--contexts", nargs="+", choices=CONTEXTS, default=list(CONTEXTS))
    p.add_argument("--bonus", type=float, default=1.5)
    p.add_argument("--json")
    r = sub.add_parser("realspeech")
    r.add_argument("--dir", required=True, help="folder with manifest.tsv and the clips")
    r.add_argument("--threads", type=int, default=2)
    r.add_argument("--faster-whisper", action="store_true", help="also faster-whisper int8, beam 1 and 5")
    r.add_argument("--skip-ours", action="store_true")
    r.add_argument("--json")
    args = parser.parse_args()
    report = {"gpu": gpu, "cpu": cpu, "realspeech": realspeech, "policy": policy}[args.cmd](args)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1, default=str), encoding="utf-8")


if __name__ == "__main__":
    main()
