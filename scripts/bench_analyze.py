#!/usr/bin/env python
"""Analysis throughput on one core: calls per second for each stage of ``qa analyze``.

Typical calls are synthesised from a bank of service, sales and collection sentences: about
40 utterances and 1,500 characters each, alternating agent and customer, with realistic
timings. Each stage is a factory in STAGES that receives the parsed arguments and returns a
per-call function; add a stage (e.g. classifiers) by adding an entry and its options.

    .venv/bin/python scripts/bench_analyze.py --calls 1000
    taskset -c 0 .venv/bin/python scripts/bench_analyze.py   # pin to one core
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path
from typing import Callable

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from qa.config import Settings  # noqa: E402
from qa.domain import CallMeta, CallTranscript, Utterance  # noqa: E402

AGENT_LINES = [
    "您好，这里是招商银行信用卡中心，工号一二三四，本次通话将被录音，请问有什么可以帮您？",
    "好的，我这边帮您查询一下，请稍等。",
    "您本期账单金额是三千二百元，最后还款日是本月二十五号。",
    "我们最近有一款理财产品，预期年化收益百分之三点八，期限一年。",
    "理财非存款，产品有风险，投资须谨慎，请您仔细阅读产品说明书。",
    "如果您需要分期的话，可以在手机银行上直接操作，年化利率是百分之七点二。",
    "请问您是张先生本人吗？麻烦报一下身份证后四位。",
    "您的信用卡已经逾期三十天了，请您尽快处理，以免影响个人征信。",
    "非常抱歉给您带来不便，已为您登记，三个工作日内给您回复。",
    "这个业务需要您本人携带身份证到网点办理。",
    "您的额度目前是五万元，暂时没有办法调整。",
    "感谢您的来电，祝您生活愉快，再见。",
    "我理解您的心情，我们一定会认真核实处理的。",
    "这个产品风险等级是R2，适合稳健型的投资者。",
]
CUSTOMER_LINES = [
    "你好，我想问一下我的账单。",
    "嗯，好的。",
    "这个产品保本吗？会不会亏？",
    "我上个月明明已经还过了，你们怎么还说我逾期。",
    "那我的额度能不能提高一点？",
    "我再考虑一下吧，谢谢。",
    "是我本人，身份证后四位是一二三四。",
    "你们这个手续费怎么这么高？",
    "好的，我知道了，没有别的问题了。",
    "我不太清楚，你再说一遍。",
]


def make_calls(n: int, utterances: int = 40, seed: int = 7, distinct: bool = False) -> list[CallTranscript]:
    """``distinct``: every utterance ends with a number of its own, so no two lines are equal
    (as in transcribed speech, where a scripted line rarely comes out the same twice) and the
    per-line caches of the analyzers never hit; without it, lines repeat across calls."""
    rng = random.Random(seed)
    calls = []
    for k in range(n):
        utts, t = [], 0.0
        for i in range(utterances):
            role, bank, size = (("agent", AGENT_LINES, (25, 62)) if i % 2 == 0
                                else ("customer", CUSTOMER_LINES, (8, 24)))
            # an utterance's own number: its line is then unlike any other, at the same length
            suffix = f"{k * utterances + i}" if distinct else ""
            text, want = "", rng.uniform(*size) - len(suffix)
            while len(text) < want:  # agents often say several sentences in one turn
                text += rng.choice(bank)
            text += suffix
            dur = len(text) / rng.uniform(220, 320) * 60
            utts.append(Utterance(role, round(t, 2), round(t + dur, 2), text))
            t += dur + rng.uniform(0.2, 1.5)
        calls.append(CallTranscript(CallMeta(f"bench-{k}", direction="outbound", business_line="wealth"),
                                    tuple(utts), None, round(t, 2)))
    return calls


def rules_stage(args: argparse.Namespace) -> Callable[[CallTranscript], object]:
    from qa.rules.engine import RuleEngine
    from qa.rules.loader import load_pack

    return RuleEngine(load_pack(args.pack)).evaluate


def classifiers_stage(args: argparse.Namespace) -> Callable[[CallTranscript], object]:
    """All four per-call classifiers (complaint risk, dissatisfaction, conduct, topic)."""
    from qa.classifiers.predict import ClassifierSet

    return ClassifierSet.load(args.models_dir).predict_call


# name -> factory(args) -> per-call function
STAGES: dict[str, Callable[[argparse.Namespace], Callable[[CallTranscript], object]]] = {
    "rules": rules_stage,
    "classifiers": classifiers_stage,
}


def bench(fn: Callable[[CallTranscript], object], calls: list[CallTranscript]) -> float:
    """CPU seconds of this process for all calls: on a shared machine wall time also counts
    other people's work."""
    fn(calls[0])  # warm caches (sound tables, compiled patterns)
    start = time.process_time()
    for call in calls:
        fn(call)
    return time.process_time() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=500)
    parser.add_argument("--utterances", type=int, default=40)
    parser.add_argument("--pack", default=Settings().rules_pack)
    parser.add_argument("--models-dir", default=Settings().models_dir)
    parser.add_argument("--distinct", action="store_true",
                        help="no two utterances equal (scripted lines never repeat word for word)")
    parser.add_argument("--stages", default="rules,classifiers", help=f"comma-separated, of: {', '.join(STAGES)}")
    args = parser.parse_args()
    calls = make_calls(args.calls, args.utterances, distinct=args.distinct)
    chars = sum(len(u.text) for c in calls for u in c.utterances) / len(calls)
    print(f"{len(calls)} calls, {args.utterances} utterances and {chars:.0f} characters each on average"
          f"{', every utterance distinct' if args.distinct else ''}")
    total = 0.0
    for name in args.stages.split(","):
        seconds = bench(STAGES[name](args), calls)
        total += seconds
        print(f"{name:12s} {len(calls) / seconds:8.1f} calls/s  ({seconds / len(calls) * 1000:.2f} ms CPU/call)")
    if "," in args.stages:
        print(f"{'all':12s} {len(calls) / total:8.1f} calls/s")


if __name__ == "__main__":
    main()
