"""A tiny random model with a byte-level tokenizer: fast end-to-end runs of every pipeline (tests, smoke runs).

`load_model("tiny-random-llama")` / `"tiny-random-qwen2"` use it; `:<seed>` picks the weights' seed.
"""

from __future__ import annotations

from typing import Any

from flax import nnx
from tokenizers import Tokenizer, decoders, models
from tokenizers.pre_tokenizers import ByteLevel
from transformers import PreTrainedTokenizerFast

from seal_jax.models.config import ModelConfig, tiny_config
from seal_jax.models.transformer import Transformer

SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
CHATML_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def byte_tokenizer() -> PreTrainedTokenizerFast:
    """256 byte tokens + ChatML specials (259 ids), no merges; EOS = pad = <|endoftext|>."""
    vocab = {c: i for i, c in enumerate(sorted(ByteLevel.alphabet()))}
    for token in SPECIAL_TOKENS:
        vocab[token] = len(vocab)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(list(SPECIAL_TOKENS))
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>", pad_token="<|endoftext|>")
    fast.chat_template = CHATML_TEMPLATE
    return fast


def tiny_model(name: str) -> tuple[ModelConfig, nnx.State, Any]:
    """`tiny-random-{llama,qwen2}[:seed]` -> (config, random f32 base state, byte tokenizer)."""
    arch, _, seed = name.removeprefix("tiny-random-").partition(":")
    # A long context (it sizes nothing): the byte tokenizer makes prompts ~4x longer than a real model's, and the
    # drivers' up-front checks hold prompts to the context length.
    cfg = tiny_config(arch, vocab_size=len(SPECIAL_TOKENS) + 256, max_position_embeddings=32768)
    model = Transformer(cfg, rngs=nnx.Rngs(int(seed or 0)))
    return cfg, nnx.split(model, nnx.Param)[1], byte_tokenizer()
