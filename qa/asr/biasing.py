"""Hotword biasing in the decoder (contextual biasing by shallow fusion).

The hotwords are compiled into a trie of token sequences. Once a hypothesis has begun a
hotword by the model's own choice (its first token earns nothing), each token that continues
the word gets a bonus of ``bonus`` (in log-probability) until the word is complete. The bonus
only steers the choice: the log-probabilities the decoder records (and the fallback checks
read) stay the model's own. So biasing can finish a word the audio began (年华 -> 年化利率)
but never start one from nothing; and a greedy hypothesis that leaves a word early has only
spent bonus on tokens the model then had to confirm. Compared with the prompt
(``asr_prompt``), which the model reads as preceding text and imitates, it cannot invent
whole phrases.

Whisper's byte-level BPE cuts a Chinese word by its context, so each hotword is compiled in
the forms it takes alone and after a space (when the space joins its first character's token).

All state is on the device in tensors of fixed shape (one trie node and one running bonus per
slot), so a step with biasing can still be captured as a CUDA graph.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

ROOT = 0


@dataclass(frozen=True)
class BiasOptions:
    hotwords: tuple[str, ...] = ()
    bonus: float = 1.5  # log-probability added per token of a hotword followed

    def validate(self) -> None:
        if not 0.0 < self.bonus <= 10.0:
            raise ValueError(f"hotword bonus must be between 0 and 10, got {self.bonus}")
        if any(not w.strip() for w in self.hotwords):
            raise ValueError("hotwords must not be empty")


class HotwordTrie:
    """Transition tables of the trie on the device: for every node its child tokens and
    child nodes (padded with ``pad_token``, a token that never wins), whether it ends a
    hotword, and the number of tokens from the root (for the bonus to withdraw)."""

    def __init__(self, sequences: list[list[int]], pad_token: int, device: torch.device):
        children: list[dict[int, int]] = [{}]
        terminal = [False]
        depth = [0]
        for seq in sequences:
            node = ROOT
            for token in seq:
                nxt = children[node].get(token)
                if nxt is None:
                    nxt = children[node][token] = len(children)
                    children.append({})
                    terminal.append(False)
                    depth.append(depth[node] + 1)
                node = nxt
            terminal[node] = True
        width = max(1, max(len(c) for c in children))
        tokens = torch.full((len(children), width), pad_token, dtype=torch.long)
        nodes = torch.zeros((len(children), width), dtype=torch.long)
        for n, kids in enumerate(children):
            for col, (tok, child) in enumerate(sorted(kids.items())):
                tokens[n, col], nodes[n, col] = tok, child
        self.child_tokens = tokens.to(device)  # [N, W]
        self.child_nodes = nodes.to(device)
        self.has_children = torch.tensor([bool(c) for c in children], device=device)
        self.terminal = torch.tensor(terminal, device=device)
        self.depth = torch.tensor(depth, device=device, dtype=torch.float32)
        self.size = len(children)
        self.pad_token = pad_token

    @classmethod
    def compile(cls, tokenizer, hotwords: tuple[str, ...], pad_token: int, device: torch.device) -> HotwordTrie:
        space = tokenizer.encode(" ")
        forms = set()
        for word in hotwords:
            forms.add(tuple(tokenizer.encode(word.strip())))
            spaced = tuple(tokenizer.encode(" " + word.strip()))
            if spaced[:len(space)] != tuple(space):  # a bare space is no part of a word
                forms.add(spaced)
        return cls([list(f) for f in sorted(forms) if len(f) > 1], pad_token, device)

    def bonus_tokens(self, node: torch.Tensor) -> torch.Tensor:
        """[B, W] the tokens that earn a bonus at each slot: those continuing the hotword it
        is inside (none at the root: a word must be begun by the model itself)."""
        return torch.where((node == ROOT)[:, None], torch.full_like(self.child_tokens[node], self.pad_token),
                           self.child_tokens[node])

    def step(self, node: torch.Tensor, token: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The next node of each slot after ``token``, and whether the slot left a hotword it
        was inside before its end (so its running bonus is withdrawn)."""
        nxt, left, _ = self.advance(node, token)
        return nxt, left

    def advance(self, node: torch.Tensor, token: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """:meth:`step`, and whether ``token`` continued the slot's hotword (earning a bonus)
        without completing it (a completed word keeps what it earned)."""
        cont = self.child_tokens[node] == token[:, None]
        inside = cont.any(dim=1)
        via = self.child_nodes[node].gather(1, cont.float().argmax(dim=1, keepdim=True))[:, 0]
        start = self.child_tokens[ROOT][None, :] == token[:, None]
        fresh = self.child_nodes[ROOT][start.float().argmax(dim=1)]
        nxt = torch.where(inside, via, torch.where(start.any(dim=1), fresh, torch.zeros_like(node)))
        left = (node != ROOT) & ~inside & ~self.terminal[node]
        # a whole word keeps its bonus; a node with nothing after it goes back to the root
        done = self.terminal[nxt] & ~self.has_children[nxt]
        earning = inside & ~self.terminal[nxt]
        return torch.where(done, torch.zeros_like(nxt), nxt), left, earning

    def leaving_penalty(self, node: torch.Tensor, earned: torch.Tensor) -> torch.Tensor:
        """[B] what each slot loses if its next token leaves the hotword it is inside: the
        bonus earned in it so far (nothing at the root or at the end of a word)."""
        return earned * ((node != ROOT) & ~self.terminal[node])
