"""Ahead-of-time compilation of one ReST-EM round for a TPU topology, on a machine without a TPU.

`python -m seal_jax.aot --config configs/knowledge_qwen7b.py --topology v5e-8` compiles the runtime's programs
(`engine/runtime.py`) at the config's shapes and shardings from abstract arguments, and prints their per-device
memory, an analytic roofline time and the largest `chunk_k` that fits (like MaxText's `train_compile.py`).
"""
