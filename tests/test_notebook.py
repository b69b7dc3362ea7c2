"""The Colab notebook runs top to bottom on CPU (nbclient, a fresh kernel) with tiny settings injected after its
parameters cell, without installing anything: it prints the held-out table, writes results.png and exports the
round's adapter."""

from __future__ import annotations

import importlib.util
import json
import os
import time
from pathlib import Path

import pytest

nbclient = pytest.importorskip("nbclient")
nbformat = pytest.importorskip("nbformat")

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "seal_jax_colab.ipynb"
# The settings of tests/golden/tiny_round.py, smaller: the tiny random Llama, 1 held-out passage without the
# baseline rows, 1 round of 2 contexts × 2 self-edits.
TINY_OVERRIDES = {
    "eval.baselines": False,
    "restem.rounds": 1,
    "restem.contexts_per_round": 2,
    "restem.samples_per_context": 2,
    "restem.eval_seeds": 1,
    "restem.sample_batch": 4,
    "data.num_eval": 1,
    "data.num_train": 2,
    "domain.max_sequences": 3,
    "inner.epochs": 1,
    "inner.chunk_k": 4,
    "inner.lora_rank": 4,
    "inner.lora_alpha": 8.0,
    "inner.max_length": 64,
    "eval.samples": 1,
    "sft.batch_size": 2,
    "sft.lora_rank": 4,
    "sft.lora_alpha": 8.0,
    "sft.max_length": 1024,
    "sft.remat": False,
}


def with_parameters(nb, **values) -> None:
    """Inserts a cell assigning `values` right after the cell tagged "parameters" (as papermill does)."""
    index = next(i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", []))
    source = "\n".join(f"{k} = {v!r}" for k, v in values.items())
    nb.cells.insert(index + 1, nbformat.v4.new_code_cell(source, metadata={"tags": ["injected-parameters"]}))


def stream_text(nb) -> str:
    return "".join(
        out.get("text", "")
        for cell in nb.cells
        if cell.cell_type == "code"
        for out in cell.get("outputs", [])
    )


def test_notebook_runs_headless_on_cpu(tmp_path, monkeypatch):
    # The kernel inherits this environment: with seal_jax imported from this checkout the notebook installs nothing.
    spec = importlib.util.find_spec("seal_jax")
    assert spec and Path(spec.origin).resolve().is_relative_to(NOTEBOOK.parents[1]), (
        "seal_jax must be importable from this checkout (pip install -e . or PYTHONPATH): the notebook would install it"
    )
    monkeypatch.setenv("JAX_PLATFORMS", "cpu")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    workdir, export_dir = tmp_path / "run", tmp_path / "adapter"
    with_parameters(
        nb,
        MODEL="tiny-random-llama",
        K=2,
        SELF_EDIT_TOKENS=24,
        WORKDIR=str(workdir),
        EXPORT_DIR=str(export_dir),
        OVERRIDES=TINY_OVERRIDES,
    )
    client = nbclient.NotebookClient(
        nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOK.parent)}}
    )
    start = time.perf_counter()
    client.execute(env=dict(os.environ))
    seconds = time.perf_counter() - start
    cells = [c for c in nb.cells if c.cell_type == "code"]
    busy = [c.metadata.execution.get("iopub.status.busy", "")[11:19] for c in cells]
    print(f"notebook executed in {seconds:.0f} s; code cells started at {busy}")

    text = stream_text(nb)
    assert "using seal_jax from" in text and "installed seal_jax" not in text  # the checkout, no pip
    assert text.count("=== self-edit") == 2 and "reward" in text
    table = json.loads((workdir / "results.json").read_text())["table"]
    assert table and all(row["method"] in text for row in table)  # the held-out table was printed
    assert (workdir / "results.png").stat().st_size > 0
    images = [o for c in nb.cells for o in c.get("outputs", []) if "image/png" in o.get("data", {})]
    assert images  # and shown
    assert {"adapter_config.json", "adapter_model.safetensors"} <= {p.name for p in export_dir.iterdir()}
    assert json.loads((export_dir / "adapter_config.json").read_text())["r"] == 4
