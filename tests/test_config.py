"""One source of truth for every setting: config sections are made from the engine's dataclasses and built back
from them unchanged, an override reaches its dataclass field, and every `--config.<key>` the docs name exists."""

from __future__ import annotations

import dataclasses
import importlib
import re
import runpy
from pathlib import Path

import pytest

from seal_jax import defaults, sections
from seal_jax.engine import distributed
from seal_jax.engine.evaluator import EngineConfig
from seal_jax.engine.inner import InnerConfig
from seal_jax.engine.sft import SftConfig
from seal_jax.engine.sharding import MeshConfig
from seal_jax.experiments import common
from seal_jax.restem import RestemConfig

REPO = Path(__file__).resolve().parents[1]

CASES = [
    (InnerConfig(), defaults.INNER_KEYS),
    (defaults.ARC_INNER, defaults.INNER_KEYS),
    (EngineConfig(), defaults.ENGINE_KEYS),
    (defaults.ARC_ENGINE, defaults.ENGINE_KEYS),
    (SftConfig(), defaults.SFT_KEYS),
    (defaults.ARC_SFT, defaults.SFT_KEYS),
    (RestemConfig(), defaults.RESTEM_KEYS),
    (defaults.ARC_RESTEM, defaults.RESTEM_KEYS),
    (MeshConfig(), defaults.MESH_KEYS),
    (distributed.Settings(), defaults.DISTRIBUTED_KEYS),
]


@pytest.mark.parametrize("instance, keys", CASES, ids=lambda c: type(c).__name__)
def test_a_section_builds_back_its_dataclass_unchanged(instance, keys):
    assert sections.build(instance, sections.section((instance, keys)), keys) == instance
    fresh = type(instance)()  # a section made from one instance turns another into it
    assert sections.build(fresh, sections.section((instance, keys)), keys) == instance


def test_the_default_configs_hold_what_the_dataclasses_define():
    knowledge, arc = defaults.knowledge(), defaults.arc()
    assert common.inner_config(knowledge.inner, 0) == InnerConfig()
    assert common.inner_config(arc.inner, 7) == dataclasses.replace(defaults.ARC_INNER, order_seed=7)
    assert common.sft_config(knowledge.sft) == SftConfig()
    assert common.sft_config(arc.sft) == defaults.ARC_SFT
    assert (
        knowledge.sft.saved_matmuls_gb == knowledge.inner.saved_matmuls_gb == InnerConfig().saved_matmuls_gb
    )


def test_an_override_reaches_its_field_and_a_bad_one_is_a_one_line_error():
    cfg = defaults.knowledge()
    cfg.inner.weight_decay = 0.01
    cfg.inner.lora_targets = "q, v,down"
    cfg.inner.coupled_order = False
    inner = common.inner_config(cfg.inner, 3)
    assert (inner.weight_decay, inner.lora.targets, inner.coupled_order, inner.order_seed) == (
        0.01,
        ("q", "v", "down"),
        False,
        3,
    )
    cfg.inner.schedule = "exponential"
    with pytest.raises(ValueError, match="bad inner-loop config: schedule must be one of"):
        common.inner_config(cfg.inner, 0)


# `--config.<key>` anywhere, and `<section>.<key>` in backticks (the docs' way of naming a setting).
DOCUMENTED = re.compile(
    r"--config\.([a-z_][a-z0-9_.]*[a-z0-9_])|`((?:inner|sft|restem|eval|data|domain|mesh|distributed|replay)"
    r"\.[a-z_][a-z0-9_]*)"
)


def names_code(name: str) -> bool:
    """`restem.py`, `inner.adapt`: a module or one of its functions, not a setting."""
    module, _, attr = name.partition(".")
    for package in ("seal_jax", "seal_jax.engine"):
        try:
            found = importlib.import_module(f"{package}.{module}")
        except ImportError:
            continue
        return attr == "py" or hasattr(found, attr)
    return False


def test_every_config_key_the_docs_name_exists():
    texts = [REPO / "README.md", *(REPO / "docs").glob("*.md"), *(REPO / "configs").rglob("*.py")]
    texts += [*(REPO / "launch").glob("*.sh")]
    configs = [defaults.knowledge(), defaults.arc()]
    found = {a for t in texts for a, _ in DOCUMENTED.findall(t.read_text()) if a}
    found |= {b for t in texts for a, b in DOCUMENTED.findall(t.read_text()) if b and not names_code(b)}
    named = found - {"a.b"}  # the usage line's placeholder
    generate = {"prompt", "chat", "max_new_tokens", "temperature", "top_p"}  # configs/generate.py's own keys

    def exists(key: str) -> bool:
        for cfg in configs:
            node = cfg
            for part in key.split("."):
                if part not in node:
                    break
                node = node[part]
            else:
                return True
        return key in generate

    assert named, "no --config.<key> found in the docs"
    missing = sorted(k for k in named if not exists(k))
    assert not missing, f"documented but not settable: {missing}"


def test_the_paper_knowledge_config_is_the_qwen7b_one_with_the_judge_and_the_padded_loss():
    def load(name):
        return runpy.run_path(str(REPO / "configs" / f"{name}.py"))["get_config"]()

    paper, base = load("knowledge_qwen7b_paper"), load("knowledge_qwen7b")
    assert (paper.eval.grader, paper.inner.pad_to, paper.inner.pad_in_loss) == ("judge", 2048, True)
    for key, value in (("eval.grader", base.eval.grader), ("inner.pad_to", 0), ("inner.pad_in_loss", False)):
        section, name = key.split(".")
        paper[section][name] = value
    paper.workdir = base.workdir
    assert paper.to_dict() == base.to_dict()
