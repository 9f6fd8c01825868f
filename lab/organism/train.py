"""Pretraining the base model: a tiny HF GPT-2 trained on fresh samples of the world.

Each step draws new sequences from the world, so there is no train set to overfit. By default the
loss is cross-entropy against the world's exact next-token distribution at each sampled prefix
(``soft_targets``): its expectation and gradient equal those of the usual sampled-token loss, with
less variance, so the model reaches calibration in fewer CPU minutes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from jaxtyping import Int
from torch import Tensor
from tqdm.auto import tqdm
from transformers import GPT2Config, GPT2LMHeadModel

from lab.organism.world import HMM

__all__ = ["BaseConfig", "deep_base_config", "gpt2_config", "train_base", "world_batches"]


@dataclass(frozen=True)
class BaseConfig:
    """Architecture and optimisation of the base model."""

    n_layer: int = 2  # transformer blocks
    d_model: int = 64  # residual stream width
    n_head: int = 4  # attention heads per block
    length: int = 31  # words after BOS in every sequence
    steps: int = 600  # optimiser steps, each on fresh world samples
    batch: int = 128  # sequences per step
    lr: float = 3e-3  # AdamW peak learning rate
    warmup: int = 100  # linear warmup steps before cosine decay to 0
    weight_decay: float = 0.01  # AdamW weight decay
    soft_targets: bool = True  # train on exact next-token distributions rather than samples


def deep_base_config() -> BaseConfig:
    """The deeper base (4 layers x 8 heads: 40 components), for planted organisms."""
    return BaseConfig(n_layer=4, d_model=64, n_head=8, steps=1000, batch=128)


def gpt2_config(world: HMM, cfg: BaseConfig) -> GPT2Config:
    """A GPT-2 config whose vocabulary and special ids match the world's tokenizer."""
    return GPT2Config(
        vocab_size=world.vocab_size,
        n_positions=cfg.length + 1,
        n_embd=cfg.d_model,
        n_layer=cfg.n_layer,
        n_head=cfg.n_head,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        bos_token_id=world.bos_id,
        eos_token_id=world.bos_id,
        pad_token_id=world.bos_id,
        tie_word_embeddings=True,
    )


def world_batches(world: HMM, batch: int, length: int, generator: torch.Generator, chunk: int = 16):
    """Endless (tokens, exact next-token probs) batches; sampled ``chunk`` batches at a time."""
    while True:
        tokens, _ = world.draw(batch * chunk, length, generator)
        probs = world.forward(tokens).next_token_logprobs.exp().float()
        yield from zip(tokens.split(batch), probs.split(batch), strict=True)


def _lr_lambda(cfg: BaseConfig):
    def f(step: int) -> float:
        if step < cfg.warmup:
            return (step + 1) / cfg.warmup
        progress = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return f


def lm_loss(
    model: GPT2LMHeadModel, tokens: Int[Tensor, "batch pos"], probs: Tensor | None
) -> Tensor:
    """Next-token cross-entropy, against exact distributions when ``probs`` is given."""
    logp = model(tokens, attention_mask=torch.ones_like(tokens)).logits[:, :-1].log_softmax(-1)
    if probs is None:
        return -logp.gather(-1, tokens[:, 1:, None]).mean()
    return -(probs[:, :-1] * logp).sum(-1).mean()


def train_base(
    world: HMM, cfg: BaseConfig, seed: int = 0, progress: bool = True
) -> GPT2LMHeadModel:
    """Train a fresh GPT-2 on the world; deterministic given ``seed`` and the thread count."""
    torch.manual_seed(seed)
    model = GPT2LMHeadModel(gpt2_config(world, cfg))
    generator = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _lr_lambda(cfg))
    batches = world_batches(world, cfg.batch, cfg.length, generator)
    bar = tqdm(range(cfg.steps), desc="base", disable=not progress, mininterval=5)
    model.train()
    for step in bar:
        tokens, probs = next(batches)
        loss = lm_loss(model, tokens, probs if cfg.soft_targets else None)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        if step % 100 == 0:
            bar.set_postfix(loss=f"{loss.item():.4f}")
    return model.eval()
