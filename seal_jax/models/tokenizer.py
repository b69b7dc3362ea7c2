"""A byte-level BPE tokenizer rebuilt from GGUF metadata (`tokenizer.ggml.*`, `tokenizer.chat_template`).

Built with `tokenizers` and wrapped in `transformers.PreTrainedTokenizerFast`, so `apply_chat_template` works.
transformers' own GGUF path is not used: it imports torch.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast

CONTROL_TOKEN_TYPE = 3  # llama.cpp's LLAMA_TOKEN_TYPE_CONTROL

# `tokenizer.ggml.pre` -> the pre-tokenizer the vocabulary's merges were learned with.
_PRE_TOKENIZERS = {
    # SmolLM2's tokenizer.json: every digit on its own, then GPT-2's byte-level regex split.
    "smollm": lambda: pre_tokenizers.Sequence(
        [
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True),
        ]
    ),
}


class TokenizerMetadataError(ValueError):
    """GGUF tokenizer metadata that this builder does not support."""


def _post_processor(meta: Mapping[str, Any], tokens: list[str]) -> processors.PostProcessor:
    """Byte-level offsets, plus BOS in front when the file says `add_bos_token`."""
    byte_level = processors.ByteLevel(trim_offsets=False)
    if not meta.get("tokenizer.ggml.add_bos_token", False):
        return byte_level
    bos_id = meta["tokenizer.ggml.bos_token_id"]
    bos = tokens[bos_id]
    template = processors.TemplateProcessing(
        single=f"{bos}:0 $A:0", pair=f"{bos}:0 $A:0 {bos}:1 $B:1", special_tokens=[(bos, bos_id)]
    )
    return processors.Sequence([byte_level, template])


def gguf_tokenizer(meta: Mapping[str, Any]) -> PreTrainedTokenizerFast:
    """The tokenizer described by GGUF metadata (keys as in the file, values as Python scalars/lists).

    Needs `tokenizer.ggml.{model,pre,tokens,token_type,merges}`; uses the bos/eos/unk/padding token ids,
    `add_bos_token` and `tokenizer.chat_template` when present. Control tokens become special tokens.
    """
    kind, pre = meta.get("tokenizer.ggml.model"), meta.get("tokenizer.ggml.pre")
    if kind != "gpt2" or pre not in _PRE_TOKENIZERS:
        raise TokenizerMetadataError(
            f"unsupported GGUF tokenizer (model {kind!r}, pre {pre!r}): expected model 'gpt2' with pre in "
            f"{sorted(_PRE_TOKENIZERS)}"
        )
    tokens: list[str] = list(meta["tokenizer.ggml.tokens"])
    merges = [tuple(m.split(" ", 1)) for m in meta["tokenizer.ggml.merges"]]
    tok = Tokenizer(models.BPE(vocab={t: i for i, t in enumerate(tokens)}, merges=merges, fuse_unk=False))
    tok.pre_tokenizer = _PRE_TOKENIZERS[pre]()
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = _post_processor(meta, tokens)
    types = meta["tokenizer.ggml.token_type"]
    tok.add_special_tokens(
        [
            AddedToken(t, special=True, normalized=False)
            for t, ttype in zip(tokens, types, strict=True)
            if ttype == CONTROL_TOKEN_TYPE
        ]
    )
    named = {
        name: tokens[meta[f"tokenizer.ggml.{key}"]]
        for name, key in (
            ("bos_token", "bos_token_id"),
            ("eos_token", "eos_token_id"),
            ("unk_token", "unknown_token_id"),
            ("pad_token", "padding_token_id"),
        )
        if f"tokenizer.ggml.{key}" in meta
    }
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, chat_template=meta.get("tokenizer.chat_template"), **named
    )
