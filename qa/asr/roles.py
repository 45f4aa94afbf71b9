"""Who said what on a mono recording: a heuristic role attribution.

Both parties share one channel, so each utterance needs a role. The heuristic combines three
observations about service calls: the agent speaks first (greeting, company name, job number),
turns mostly alternate, and some phrases are typical of one side (agents say 您好/请问/工号/
为您服务/稍等; customers say 我想/我的/为什么/投诉). A two-state Viterbi pass picks the most
likely role sequence under those scores. Roles found this way are marked ``role_inferred``.

The stage calls it through :data:`RoleAssigner`; the learned assigner
(:mod:`qa.classifiers.roles`) replaces the cue words with the role model's evidence and keeps
the same turn-taking pass (:func:`decode_roles`).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Callable, Sequence

from ..domain import AGENT, CUSTOMER

# (text, start_s, end_s) of each utterance in time order -> one role per utterance
RoleAssigner = Callable[[Sequence[tuple[str, float, float]]], list[str]]

HEURISTIC_VERSION = "heuristic-v1"

AGENT_CUES: tuple[str, ...] = (
    "您好", "请问", "工号", "为您服务", "很高兴", "本次通话", "录音", "请您", "您的", "帮您",
    "稍等", "核实", "感谢您", "还有什么", "给您", "为您", "客服", "银行", "先生", "女士",
    "温馨提示", "风险", "产品", "办理", "抱歉",
)
CUSTOMER_CUES: tuple[str, ...] = (
    "我想", "我的", "我要", "我是", "为什么", "怎么", "投诉", "能不能", "可以吗", "多少",
    "我不", "你们", "我这", "行吧", "好吧", "我问", "我卡", "我能",
)


@dataclass(frozen=True)
class RoleHeuristic:
    """Scores of the Viterbi pass (log-probabilities); the defaults favour alternation."""

    switch_prob: float = 0.85  # a quick reply (pause under 0.5 s) is the other party
    long_pause_s: float = 2.0  # after a pause this long, only slightly more likely than not
    long_pause_switch_prob: float = 0.6
    cue_weight: float = 1.2
    first_agent_prob: float = 0.8

    def validate(self) -> None:
        for name in ("switch_prob", "long_pause_switch_prob", "first_agent_prob"):
            value = getattr(self, name)
            if not 0.0 < value < 1.0:
                raise ValueError(f"{name} must be strictly between 0 and 1, got {value}")

    def switch_probability(self, pause_s: float) -> float:
        """Quick replies come from the other party; after a longer pause the same speaker
        going on becomes more likely (linear between 0.5 s and ``long_pause_s``)."""
        share = min(1.0, max(0.0, (pause_s - 0.5) / max(1e-6, self.long_pause_s - 0.5)))
        return self.switch_prob + share * (self.long_pause_switch_prob - self.switch_prob)

    def cue_score(self, text: str) -> float:
        """Positive: sounds like the agent; negative: like the customer."""
        agent = sum(text.count(c) for c in AGENT_CUES)
        customer = sum(text.count(c) for c in CUSTOMER_CUES)
        return self.cue_weight * (agent - customer)

    @property
    def provenance(self) -> dict[str, Any]:
        return {"method": "heuristic", "version": HEURISTIC_VERSION, "params": asdict(self)}

    def __call__(self, utterances: Sequence[tuple[str, float, float]]) -> list[str]:
        self.validate()
        return decode_roles([self.cue_score(text) for text, _, _ in utterances], utterances, self)


def decode_roles(evidence: Sequence[float], utterances: Sequence[tuple[str, float, float]],
                 turns: RoleHeuristic) -> list[str]:
    """The most likely role sequence (Viterbi). ``evidence[i]`` is how much more likely
    utterance ``i`` is the agent's than the customer's, as a log-odds; ``turns`` supplies the
    first-speaker prior and the pause-dependent chance that the speaker changes."""
    if not utterances:
        return []
    states = (AGENT, CUSTOMER)

    def emit(i: int, state: str) -> float:
        return evidence[i] / 2 if state == AGENT else -evidence[i] / 2

    prior = {AGENT: math.log(turns.first_agent_prob), CUSTOMER: math.log(1 - turns.first_agent_prob)}
    best = {s: prior[s] + emit(0, s) for s in states}
    back: list[dict[str, str]] = []
    for i in range(1, len(utterances)):
        pause = utterances[i][1] - utterances[i - 1][2]
        p_switch = turns.switch_probability(pause)
        step, ptr = {}, {}
        for s in states:
            options = {p: best[p] + math.log(p_switch if p != s else 1 - p_switch) for p in states}
            ptr[s] = max(options, key=options.get)
            step[s] = options[ptr[s]] + emit(i, s)
        best, back = step, back + [ptr]
    last = max(best, key=best.get)
    roles = [last]
    for ptr in reversed(back):
        roles.append(ptr[roles[-1]])
    return roles[::-1]


def role_provenance(assigner: RoleAssigner) -> dict[str, Any]:
    """What attributes roles, for the transcript's record: the assigner's own ``provenance``
    (method, model version and sha256), or its qualified name for a plain function."""
    provenance = getattr(assigner, "provenance", None)
    if provenance is not None:
        return provenance
    return {"method": "custom", "name": f"{getattr(assigner, '__module__', '?')}.{getattr(assigner, '__qualname__', '?')}"}


assign_roles: RoleAssigner = RoleHeuristic()
