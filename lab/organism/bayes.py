"""The exact KL-regularised optimum pi*(x) ∝ p_world(x) exp(U(x) / beta).

U is the labeler's true utility, a sum of per-token terms driven by the labeler state ``e`` (last
exclusive scene and count of happy words). With ``b_t`` the world's predictive belief over the
next word's scene and ``n`` words still to come, a backward recursion over (scene, e) gives, in
log space,

    W[n](z, e) = log E[exp(U of the next n words / beta) | next scene z, state e]
               = logsumexp_x  log E(z, x) + r(e, x) / beta + C[n-1](z, e'(e, x))
    C[m](z, e) = logsumexp_z'  log T(z, z') + W[m](z', e)        (C[0] = 0)

so that, for a prefix with belief b and state e,

    log Z(prefix)      = logsumexp_z  log b(z) + W[n](z, e)
    log pi*(x | prefix) = logsumexp_z [log b(z) + log E(z, x) + C[n-1](z, e'(e, x))]
                          + r(e, x) / beta - log Z(prefix).

pi* is defined for sequences of a fixed number of words (``length``), like the policies it is
compared with. ``soft_values`` gives the exact soft value of every next token,

    Q*(prefix, x) / beta = r(e, x) / beta + log E_world[exp(U after x / beta) | prefix, x]
                         = r(e, x) / beta + logsumexp_z [log b(z) + log E(z, x) + C[n-1](z, e')]
                           - log p_world(x | prefix),

so that pi*(x | prefix) ∝ p_world(x | prefix) exp(Q*(prefix, x) / beta).

The optimal objective is ``beta * log Z(BOS)`` = beta log E_world[exp(U / beta)].
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from jaxtyping import Float, Int
from torch import Tensor

from lab.errors import LabError
from lab.models.sampling import categorical
from lab.organism.labeler import Labeler
from lab.organism.world import HMM

__all__ = ["PiStar"]


class PiStar:
    """Exact pi* for a world, a labeler and beta, over sequences of ``length`` words after BOS."""

    def __init__(self, world: HMM, labeler: Labeler, beta: float, length: int) -> None:
        if beta <= 0:
            raise LabError(f"beta must be > 0; got {beta}.")
        if (
            labeler.forbidden.shape[0] != world.n_scenes
            or labeler.happiness.shape[0] != world.vocab_size
        ):
            raise LabError(
                "The labeler was built for another world (scene or vocab counts differ)."
            )
        self.world, self.labeler, self.beta, self.length = world, labeler, float(beta), length
        reward, self.next_state = labeler.tables()  # (state, vocab)
        self.scaled_reward = reward / self.beta
        log_e = world.log_emission  # (scene, vocab)
        n_scene, n_state = world.n_scenes, labeler.n_states
        c = torch.zeros(length + 1, n_scene, n_state, dtype=torch.float64)
        w = torch.zeros(length + 1, n_scene, n_state, dtype=torch.float64)
        for n in range(1, length + 1):
            # (scene, state, vocab): C[n-1] at the state each token leads to.
            cont = c[n - 1][:, self.next_state]
            w[n] = torch.logsumexp(log_e[:, None] + self.scaled_reward[None] + cont, -1)
            c[n] = torch.logsumexp(world.log_transition[:, :, None] + w[n][None], 1)
        self.log_w, self.log_c = w, c  # (n_left, scene, state)

    # ---- incremental state -------------------------------------------------------------------
    def _state(self, tokens: Tensor) -> tuple[Tensor, Tensor]:
        """(log belief over the next scene, labeler state) after each prefix; cheap for short."""
        log_b = self.world.initial_log_belief(tokens.shape[0])
        _, nxt = self.labeler.tables()
        e = torch.full((tokens.shape[0],), self.labeler.initial_state, dtype=torch.long)
        for t in range(1, tokens.shape[1]):
            _, _, log_b = self.world.step(log_b, tokens[:, t])
            e = nxt[e, tokens[:, t]]
        return log_b, e

    def _next(self, log_b: Tensor, e: Tensor, n_left: int) -> tuple[Tensor, Tensor]:
        """(log pi*(x | prefix) over the vocab, log Z(prefix)) for a batch of states."""
        if not 1 <= n_left <= self.length:
            raise LabError(f"pi* covers {self.length} words; {n_left} left is outside that.")
        cont = self.log_c[n_left - 1][:, self.next_state[e]]  # (scene, batch, vocab)
        joint = log_b.T[:, :, None] + self.world.log_emission[:, None] + cont
        logits = torch.logsumexp(joint, 0) + self.scaled_reward[e]
        log_z = torch.logsumexp(log_b + self.log_w[n_left][:, e].T, -1)
        return logits - log_z[:, None], log_z

    def _soft(self, log_b: Tensor, e: Tensor, n_left: int) -> Tensor:
        """Q*(prefix, x) / beta over the vocab for a batch of states (-inf where p_world is 0)."""
        log_pi, log_z = self._next(log_b, e, n_left)
        log_p = torch.logsumexp(log_b.T[:, :, None] + self.world.log_emission[:, None], 0)
        soft = log_pi + log_z[:, None] - log_p
        return soft.masked_fill(torch.isinf(log_p), -torch.inf)

    # ---- public API --------------------------------------------------------------------------
    def _per_prefix(self, tokens: Tensor, at: Callable[[Tensor, Tensor, int], Tensor]) -> Tensor:
        """``at(log belief, labeler state, words left)`` after each prefix of ``tokens`` that has
        words left to write (pos <= length), stacked along dim 1."""
        tokens = self.world.check_tokens(tokens)
        if tokens.shape[1] > self.length + 1:
            raise LabError(f"pi* covers {self.length} words; got {tokens.shape[1] - 1}.")
        log_b = self.world.initial_log_belief(tokens.shape[0])
        _, nxt = self.labeler.tables()
        e = torch.full((tokens.shape[0],), self.labeler.initial_state, dtype=torch.long)
        out = []
        for t in range(min(tokens.shape[1], self.length)):
            if t > 0:
                _, _, log_b = self.world.step(log_b, tokens[:, t])
                e = nxt[e, tokens[:, t]]
            out.append(at(log_b, e, self.length - t))
        return torch.stack(out, 1)

    def soft_values(self, tokens: Int[Tensor, "batch pos"]) -> Float[Tensor, "batch pos vocab"]:
        """Exact Q*(prefix, x) = r + beta log E_world[exp(U_future / beta) | prefix, x] for every
        next token x at every position before the last word (as ``next_token_logprobs``); -inf
        for tokens the world never emits there (BOS)."""
        return self._per_prefix(tokens, lambda b, e, n: self.beta * self._soft(b, e, n))

    def next_token_logprobs(
        self, tokens: Int[Tensor, "batch pos"]
    ) -> Float[Tensor, "batch pos vocab"]:
        """log pi*(next token | prefix) at every position before the last word (pos <= length)."""
        return self._per_prefix(tokens, lambda b, e, n: self._next(b, e, n)[0])

    def log_z(self, prompts: Int[Tensor, "batch prompt"]) -> Float[Tensor, " batch"]:
        """log E_world[exp(U(continuation) / beta) | prompt] for each prompt."""
        prompts = self.world.check_tokens(prompts)
        log_b, e = self._state(prompts)
        return self._next(log_b, e, self.length + 1 - prompts.shape[1])[1]

    def objective(self, prompts: Int[Tensor, "batch prompt"] | None = None) -> float:
        """Optimal E[U] - beta KL(pi || world): beta * mean log Z (from BOS when None)."""
        if prompts is None:
            prompts = torch.zeros(1, 1, dtype=torch.long)
        return self.beta * self.log_z(prompts).mean().item()

    def log_prob(self, tokens: Int[Tensor, "batch pos"], start: int = 1) -> Float[Tensor, " batch"]:
        """log pi*(tokens[:, start:] | tokens[:, :start]) for complete sequences."""
        tokens = self.world.check_tokens(tokens)
        if tokens.shape[1] != self.length + 1:
            raise LabError(f"log_prob needs complete sequences of {self.length} words.")
        lp = self.next_token_logprobs(tokens[:, :-1])
        picked = lp.gather(-1, tokens[:, 1:, None]).squeeze(-1)  # (batch, length)
        return picked[:, start - 1 :].sum(-1)

    def sample(
        self, prompts: Int[Tensor, "batch prompt"], generator: torch.Generator | None = None
    ) -> Int[Tensor, "batch pos"]:
        """Exact samples of pi*: each prompt continued to ``length`` words."""
        prompts = self.world.check_tokens(prompts)
        log_b, e = self._state(prompts)
        _, nxt = self.labeler.tables()
        tokens = [prompts]
        for t in range(prompts.shape[1], self.length + 1):
            logp, _ = self._next(log_b, e, self.length + 1 - t)
            x = categorical(logp.exp().cumsum(-1), generator)
            tokens.append(x[:, None])
            _, _, log_b = self.world.step(log_b, x)
            e = nxt[e, x]
        return torch.cat(tokens, 1)
