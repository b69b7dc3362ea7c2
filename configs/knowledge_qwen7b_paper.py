"""The paper's knowledge protocol on Qwen2.5-7B: `configs/knowledge_qwen7b.py` with the reference's LLM judge
(GPT-4.1 through an OpenAI-compatible endpoint; set OPENAI_API_KEY or `--config.eval.judge_api_key_env`) and its
padded inner-loop loss (every sequence padded to 2048 with EOS and the pads in the loss; docs/design.md).

    python -m seal_jax.main --config configs/knowledge_qwen7b_paper.py

The padding costs many times the compute of the default loop (about 45x on SmolLM2's short self-edits); what it
changes on the embedded model: docs/results.md.
For the reference's prompt wording add `--config.domain.prompt_file=<json>` (domains/prompt_file.py).
"""

from pathlib import Path

from seal_jax import config_files


def get_config():
    cfg = config_files.config_from(Path(__file__).with_name("knowledge_qwen7b.py"))
    cfg.workdir = "runs/knowledge_qwen7b_paper"
    cfg.eval.grader = "judge"
    cfg.inner.pad_to = 2048
    cfg.inner.pad_in_loss = True
    return cfg
