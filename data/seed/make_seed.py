"""Regenerate the seed corpus (``*.jsonl`` beside this file) from ``templates.py``.

Run from the repository root: ``.venv/bin/python data/seed/make_seed.py``. The output is
deterministic (fixed seed), so the training data sha256 recorded in the model cards only
changes when the templates or this script change.
"""

from __future__ import annotations

import json
import random
import re
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from templates import (  # noqa: E402 - the banks live beside this script
    A_BACKCHANNEL, A_CURT, A_EXPLAIN, A_MISCONDUCT, A_OPEN, A_POLITE, A_SCRIPT, A_TERSE, AGENT_SLOTS, C_ANGRY,
    C_BACKCHANNEL, C_COMPLAINT, C_INFO, C_NEUTRAL, C_POLITE, C_REPLY, C_TERSE, SLOTS, TOPIC_LINES,
)

SEED = 20261123
HOLDOUT_EVERY = 4  # template index % 4 == 3 is held out
SLOTS_ALL = {**SLOTS, **AGENT_SLOTS}
CUSTOMER_PREFIX = ["", "", "", "", "喂，", "那个，", "嗯，", "就是，", "哎，", "我说，"]
AGENT_PREFIX = ["", "", "", "", "好的，", "嗯，", "{title}，", "是这样的，", "您好，"]
# A rude agent does not open with a courtesy.
RUDE_PREFIX = ["", "", "", "", "嗯，", "{title}，", "行了，"]

_ALT = re.compile(r"\[([^\[\]]*)\]")
_SLOT = re.compile(r"\{(\w+)\}")


def expand(template: str, rng: random.Random) -> str:
    text = _ALT.sub(lambda m: rng.choice(m.group(1).split("|")), template)
    return _SLOT.sub(lambda m: rng.choice(SLOTS_ALL[m.group(1)]), text)


class Bank:
    """Templates of one kind, split into training and held-out templates by index."""

    def __init__(self, name: str, templates: list[str], role: str, prefixes: list[str] | None = None):
        self.name = name
        self.role = role
        self.prefixes = prefixes or (AGENT_PREFIX if role == "agent" else CUSTOMER_PREFIX)
        self.items = [(f"{name}:{i}", t, "heldout" if i % HOLDOUT_EVERY == HOLDOUT_EVERY - 1 else "train")
                      for i, t in enumerate(templates)]

    def templates(self, split: str) -> list[tuple[str, str]]:
        return [(tid, t) for tid, t, s in self.items if s == split]

    def utter(self, rng: random.Random, split: str, prefix: bool = True) -> tuple[str, str]:
        tid, template = rng.choice(self.templates(split))
        return tid, self.render(template, rng, prefix)

    def render(self, template: str, rng: random.Random, prefix: bool = True) -> str:
        pre = rng.choice(self.prefixes) if prefix else ""
        text = expand(pre + template, rng)
        return text.replace("，，", "，")

    def variants(self, rng: random.Random, per_template: int) -> list[tuple[str, str, str]]:
        """``per_template`` distinct renderings of every template: (template id, text, split)."""
        out = []
        for tid, template, split in self.items:
            seen: set[str] = set()
            for _ in range(per_template * 6):
                text = self.render(template, rng)
                if text not in seen:
                    seen.add(text)
                    out.append((tid, text, split))
                if len(seen) >= per_template:
                    break
        return out


def build_banks() -> dict[str, Bank]:
    banks = {
        "c_complaint": Bank("c_complaint", C_COMPLAINT, "customer"),
        "c_angry": Bank("c_angry", C_ANGRY, "customer"),
        "c_neutral": Bank("c_neutral", C_NEUTRAL, "customer"),
        "a_polite": Bank("a_polite", A_POLITE, "agent"),
        "a_misconduct": Bank("a_misconduct", A_MISCONDUCT, "agent", RUDE_PREFIX),
        "c_reply": Bank("c_reply", C_REPLY, "customer"),
        "a_script": Bank("a_script", A_SCRIPT, "agent"),
    }
    for n, (topic, (agent_lines, customer_lines)) in enumerate(TOPIC_LINES.items()):
        banks[f"t{n}_agent"] = Bank(f"t{n}_agent", agent_lines, "agent")
        banks[f"t{n}_customer"] = Bank(f"t{n}_customer", customer_lines, "customer")
    # Role-only banks come last: the other corpora never draw from them, so adding them left
    # those corpora byte for byte as they were.
    banks.update({
        "a_open": Bank("a_open", A_OPEN, "agent"),
        "c_polite": Bank("c_polite", C_POLITE, "customer"),
        "c_terse": Bank("c_terse", C_TERSE, "customer"),
        "a_terse": Bank("a_terse", A_TERSE, "agent"),
        "a_explain": Bank("a_explain", A_EXPLAIN, "agent"),
        "c_info": Bank("c_info", C_INFO, "customer"),
        "a_curt": Bank("a_curt", A_CURT, "agent"),
        "c_backchannel": Bank("c_backchannel", C_BACKCHANNEL, "customer"),
        "a_backchannel": Bank("a_backchannel", A_BACKCHANNEL, "agent"),
    })
    return banks


def topic_key(topic: str) -> int:
    return list(TOPIC_LINES).index(topic)


def row(text: str, label: str, split: str, kind: str, templates: list[str]) -> dict:
    return {"text": text, "label": label, "split": split, "kind": kind, "templates": templates}


def side_doc(rng: random.Random, split: str, neutral: list[Bank], signal: Bank | None, n_signal: int) -> tuple[str, list[str]]:
    """One party's side of a call: neutral lines with ``n_signal`` signal lines mixed in."""
    parts: list[tuple[str, str]] = [rng.choice(neutral).utter(rng, split) for _ in range(rng.randint(2, 8))]
    for _ in range(n_signal):
        parts.insert(rng.randint(0, len(parts)), signal.utter(rng, split))
    return "\n".join(t for _, t in parts), sorted({tid for tid, _ in parts})


def binary_corpus(rng, banks, pos_banks, neg_banks, neutral_banks, signal_bank, labels, per_template, n_docs):
    pos_label, neg_label = labels
    rows = []
    for b in pos_banks:
        rows += [row(t, pos_label, s, "utterance", [tid]) for tid, t, s in b.variants(rng, per_template)]
    for b, k in neg_banks:
        rows += [row(t, neg_label, s, "utterance", [tid]) for tid, t, s in b.variants(rng, k)]
    for split, count in (("train", n_docs), ("heldout", n_docs // 3)):
        for i in range(count):
            # Most calls carry no signal; 2 in 5 of these documents do.
            positive = i % 5 < 2
            if positive:
                text, tids = side_doc(rng, split, neutral_banks, signal_bank, rng.randint(1, 2))
            else:
                # Negatives may carry the hard-negative bank (e.g. mild annoyance for complaints).
                hard = [b for b, _ in neg_banks if b not in neutral_banks]
                extra = rng.choice(hard) if hard and rng.random() < 0.5 else None
                text, tids = side_doc(rng, split, neutral_banks, extra, 1 if extra else 0)
            rows.append(row(text, pos_label if positive else neg_label, split, "call_side", tids))
    return rows


def topic_corpus(rng, banks, n_calls_per_topic):
    rows = []
    for topic in TOPIC_LINES:
        k = topic_key(topic)
        ta, tc = banks[f"t{k}_agent"], banks[f"t{k}_customer"]
        for split, count in (("train", n_calls_per_topic), ("heldout", n_calls_per_topic // 3)):
            for _ in range(count):
                lines = [banks["a_polite"].utter(rng, split, prefix=False)]
                for _ in range(rng.randint(1, 4)):
                    lines.append(tc.utter(rng, split))
                    lines.append(ta.utter(rng, split))
                for _ in range(rng.randint(0, 3)):
                    filler = rng.choice([banks["c_neutral"], banks["c_reply"], banks["a_polite"],
                                         banks["a_script"], banks["c_angry"]])
                    lines.insert(rng.randint(1, len(lines)), filler.utter(rng, split))
                text = "\n".join(t for _, t in lines)
                rows.append(row(text, topic, split, "call", sorted({tid for tid, _ in lines})))
    # Short single-topic utterances too, so a one-line call is still classified.
    for topic in TOPIC_LINES:
        k = topic_key(topic)
        for b in (banks[f"t{k}_agent"], banks[f"t{k}_customer"]):
            rows += [row(t, topic, s, "utterance", [tid]) for tid, t, s in b.variants(rng, 3)]
    return rows


# Complaints, anger and misconduct are rare in real calls; weighting them like ordinary
# service talk would make the role model (and its held-out accuracy) about the wrong mix.
# Three renderings each (not seven) keep them rarer without leaving the model so few rude
# agent lines that it takes every rude line for the customer's.
# Backchannels (嗯，对 / 好的，您说) are said by both sides: two renderings each, so the model
# learns they carry little evidence rather than a side.
RARE_BANKS = ("c_complaint", "c_angry", "a_misconduct")
SHORT_BANKS = ("c_backchannel", "a_backchannel")

# Transcripts end sentences with 。 or ？ (qa.asr.text normalizes Whisper's punctuation), the
# templates mostly do not; role examples get the mark half of the time, so both forms are known.
_QUESTION = re.compile(r"(吗|呢|么|吧|什么|怎么|多少|哪|几|是不是|能不能|可不可以|有没有|行不行|对不对|好吗)[^，。]*$")


def asr_punctuation(text: str, rng: random.Random) -> str:
    if text.endswith(("？", "。", "！")) or rng.random() < 0.5:
        return text
    return text + ("？" if _QUESTION.search(text) else "。")


def role_corpus(rng, banks, per_template):
    rows = []
    for name, bank in banks.items():
        k = 3 if name in RARE_BANKS else 2 if name in SHORT_BANKS else per_template
        rows += [row(asr_punctuation(t, rng), bank.role, s, "utterance", [tid])
                 for tid, t, s in bank.variants(rng, k)]
    return rows


# Who says what in the held-out dialogues, as (bank, weight): ordinary service talk mostly,
# complaints and misconduct now and then, backchannels from both sides.
CUSTOMER_MIX = (("c_neutral", 3), ("c_reply", 3), ("c_polite", 2), ("c_terse", 2), ("c_info", 1.5), ("topic", 3),
                ("c_backchannel", 1), ("c_angry", 0.6), ("c_complaint", 0.3))
AGENT_MIX = (("a_polite", 3), ("a_script", 3), ("a_terse", 2), ("a_explain", 2), ("topic", 3),
             ("a_backchannel", 1), ("a_curt", 0.5), ("a_misconduct", 0.3))
SAME_SPEAKER_GOES_ON = 0.2  # a turn cut in two by a pause, or the agent back after 请稍等


def _pick(rng: random.Random, banks, mix, topic_bank):
    names = [n for n, _ in mix]
    name = rng.choices(names, weights=[w for _, w in mix])[0]
    return topic_bank if name == "topic" else banks[name]


def dialogue(rng: random.Random, banks, split: str) -> dict:
    """One mono call of ``split`` templates: utterances in time order with their true roles.

    The agent opens most calls (an outbound call may start with the customer's 喂); after
    that the other party takes the next turn except in 1 in 5 turns, when the same speaker
    goes on. Pauses overlap on purpose: a quick reply can come from the same speaker and a
    long pause can precede the other party, so timing alone cannot settle a role."""
    k = rng.randrange(len(TOPIC_LINES))
    topic = {"agent": banks[f"t{k}_agent"], "customer": banks[f"t{k}_customer"]}
    mixes = {"agent": AGENT_MIX, "customer": CUSTOMER_MIX}
    lines: list[tuple[str, str, str]] = []  # (role, template id, text)
    if rng.random() < 0.15:
        lines.append(("customer", *banks["c_backchannel"].utter(rng, split, prefix=False)))
    lines.append(("agent", *banks["a_open"].utter(rng, split, prefix=False)))
    speaker = "customer"
    for _ in range(rng.randint(5, 15)):
        bank = _pick(rng, banks, mixes[speaker], topic[speaker])
        lines.append((speaker, *bank.utter(rng, split)))
        if rng.random() >= SAME_SPEAKER_GOES_ON:
            speaker = "agent" if speaker == "customer" else "customer"
    turns, t, previous = [], rng.uniform(0.2, 1.0), None
    for role, _, text in lines:
        if previous is not None:
            if role != previous:
                t += max(-0.4, rng.gauss(0.7, 0.5))  # replies, sometimes over the other's end
            elif rng.random() < 0.3:
                t += rng.uniform(3.0, 10.0)  # looked something up
            else:
                t += rng.uniform(0.2, 2.5)
        text = asr_punctuation(text, rng)
        duration = len(text) / rng.uniform(3.5, 5.5) + 0.3
        turns.append({"text": text, "role": role, "start_s": round(t, 2), "end_s": round(t + duration, 2)})
        t += duration
        previous = role
    return {"turns": turns, "split": split, "templates": sorted({tid for _, tid, _ in lines})}


def role_dialogues(rng: random.Random, banks, count: int) -> list[dict]:
    """Held-out dialogues only: they score the role model in context (qa/classifiers/roles.py)."""
    return [dialogue(rng, banks, "heldout") for _ in range(count)]


def main() -> None:
    rng = random.Random(SEED)
    banks = build_banks()
    topic_agent = [banks[f"t{k}_agent"] for k in range(len(TOPIC_LINES))]
    topic_customer = [banks[f"t{k}_customer"] for k in range(len(TOPIC_LINES))]
    customer_neutral = [banks["c_neutral"], banks["c_reply"], *topic_customer]
    agent_neutral = [banks["a_polite"], banks["a_script"], *topic_agent]
    corpora = {
        "complaint_risk": binary_corpus(
            rng, banks, [banks["c_complaint"]],
            [(banks["c_angry"], 5), (banks["c_neutral"], 4), (banks["c_reply"], 3), *[(b, 3) for b in topic_customer]],
            customer_neutral,
            banks["c_complaint"], ("complaint", "normal"), 7, 360),
        "dissatisfaction": binary_corpus(
            rng, banks, [banks["c_angry"], banks["c_complaint"]],
            [(banks["c_neutral"], 6), (banks["c_reply"], 3), *[(b, 4) for b in topic_customer]],
            customer_neutral, banks["c_angry"], ("dissatisfied", "neutral"), 5, 360),
        "agent_conduct": binary_corpus(
            rng, banks, [banks["a_misconduct"]],
            [(banks["a_polite"], 6), (banks["a_script"], 4), *[(b, 4) for b in topic_agent]],
            agent_neutral, banks["a_misconduct"], ("misconduct", "proper"), 7, 360),
        "topic": topic_corpus(rng, banks, 90),
        "role": role_corpus(rng, banks, 7),
    }
    for name, rows in corpora.items():
        seen: set[tuple[str, str]] = set()
        unique = []
        for r in rows:
            if (r["text"], r["label"]) not in seen:
                seen.add((r["text"], r["label"]))
                unique.append(r)
        path = HERE / f"{name}.jsonl"
        with path.open("w", encoding="utf-8") as f:
            for r in unique:
                f.write(json.dumps(r, ensure_ascii=False) + "\n")
        counts: dict[str, int] = {}
        for r in unique:
            counts[f"{r['split']}/{r['label']}"] = counts.get(f"{r['split']}/{r['label']}", 0) + 1
        print(f"{path.name}: {len(unique)} rows {dict(sorted(counts.items()))}")
    dialogues = role_dialogues(rng, banks, 300)
    path = HERE / "role_dialogues.jsonl"
    with path.open("w", encoding="utf-8") as f:
        for d in dialogues:
            f.write(json.dumps(d, ensure_ascii=False) + "\n")
    print(f"{path.name}: {len(dialogues)} dialogues, {sum(len(d['turns']) for d in dialogues)} utterances")


if __name__ == "__main__":
    main()
