"""Host-side text <-> tokens around the jitted samplers: tokenize, pad, decode, detokenize."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np

from seal_jax.engine.sampling import SamplingConfig


def format_chat(tokenizer: Any, messages: list[dict[str, str]]) -> str:
    """Chat messages -> prompt text with the model's template and the generation prompt."""
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def stop_ids(tokenizer: Any) -> tuple[int, ...]:
    """EOS ids: the tokenizer's EOS plus end-of-turn tokens its chat template uses, when present."""
    ids = {tokenizer.eos_token_id} if tokenizer.eos_token_id is not None else set()
    vocab = tokenizer.get_vocab()
    ids |= {vocab[t] for t in ("<|im_end|>", "<|eot_id|>", "<|endoftext|>", "<|end_of_text|>") if t in vocab}
    return tuple(sorted(ids))


def pad_id(tokenizer: Any) -> int:
    """The padding id: the tokenizer's pad token, else its EOS."""
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    return int(pad or 0)


def sampling_config(tokenizer: Any, **overrides: Any) -> SamplingConfig:
    """A SamplingConfig with this tokenizer's stop and pad ids."""
    return SamplingConfig(eos_ids=stop_ids(tokenizer), pad_id=pad_id(tokenizer), **overrides)


def for_tokenizer(cfg: SamplingConfig, tokenizer: Any) -> SamplingConfig:
    """`cfg` with this tokenizer's stop and pad ids."""
    return dataclasses.replace(cfg, eos_ids=stop_ids(tokenizer), pad_id=pad_id(tokenizer))


def encode_prompts(tokenizer: Any, prompts: Sequence[str]) -> list[list[int]]:
    """Prompt texts -> token ids (a BOS only where the tokenizer adds one and the text lacks it)."""
    out = []
    bos = tokenizer.bos_token
    for p in prompts:
        ids = tokenizer.encode(p, add_special_tokens=not (bos and p.startswith(bos)))
        out.append(ids or [tokenizer.eos_token_id or 0])
    return out


def decode_outputs(tokenizer: Any, tokens: np.ndarray, lengths: np.ndarray, stop: Sequence[int]) -> list[str]:
    """tokens [B, N], lengths [B] -> texts without stop tokens."""
    texts = []
    for row, n in zip(np.asarray(tokens), np.asarray(lengths), strict=True):
        ids = [int(t) for t in row[: int(n)] if int(t) not in stop]
        texts.append(tokenizer.decode(ids, skip_special_tokens=True).strip())
    return texts


def end_of_turn_text(tokenizer: Any) -> str:
    """The text the chat template puts right after an assistant message (e.g. "<|im_end|>", "<|eot_id|>")."""
    marker = "\u2063SEAL\u2063"
    rendered = tokenizer.apply_chat_template(
        [{"role": "user", "content": "x"}, {"role": "assistant", "content": marker}], tokenize=False
    )
    tail = rendered.split(marker, 1)[1]
    return tail.split("\n", 1)[0] if tail.strip() else (tokenizer.eos_token or "")
