"""Families live in tracer/adapters/ only: adapters register themselves, compose the standard block
slots, and write what the readers need into the manifest's facts; no reader names a family."""

from __future__ import annotations

import ast
import os
import subprocess
import sys

import pytest

from stepscope.tracer.adapters import base as adapter_base
from stepscope.tracer.adapters import facts as config_rule_table
from stepscope.tracer.adapters.base import Adapter, registered_adapters
from stepscope.tracer.adapters.generic import GenericAdapter, GenericFallbackWarning
from stepscope.tracer.adapters.registry import adapter_for
from stepscope.tracer.adapters.slots import BLOCK_SLOTS, MLP_OUT, RESID_MID, RESID_POST, RESID_PRE, replacing, without
from stepscope.tracer.model_info import is_generic_fallback, renormalises_top_k
from stepscope.tracer.names import BLOCK_NAMES
from stepscope.tui.views.model_overview import experts_fact
from stepscope.tui.views.op_facts import Layout
from tests.support.paths import ROOT
from tests.support.tiny_models import tiny_model

ADAPTERS_DIR = os.path.join(ROOT, "tracer", "adapters")


def family_names() -> set[str]:
    """Every family name and model type the adapters and their config rules know."""
    names = {GenericAdapter.family}
    for model_type, cls in registered_adapters().items():
        names |= {model_type, cls.family}
    names |= set(config_rule_table.CONFIG_RULES)
    names |= set(config_rule_table.GGUF_MODEL_TYPES) | set(config_rule_table.GGUF_MODEL_TYPES.values())
    return names


def _sources():
    for top in ("tracer", "tui", "stepscope"):
        for dirpath, dirnames, filenames in os.walk(os.path.join(ROOT, top)):
            dirnames[:] = [d for d in dirnames if d != "__pycache__"]
            if os.path.commonpath([dirpath, ADAPTERS_DIR]) == ADAPTERS_DIR:
                continue
            for fn in filenames:
                if fn.endswith(".py"):
                    yield os.path.join(dirpath, fn)


def test_no_family_name_outside_the_adapters():
    names = family_names()
    assert {"llama", "mixtral", "generic", "gemma3"} <= names
    found = []
    for path in _sources():
        with open(path, encoding="utf-8") as f:
            tree = ast.parse(f.read(), path)
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in names:
                found.append(f"{os.path.relpath(path, ROOT)}:{node.lineno}: {node.value!r}")
    assert found == []


def test_adapter_modules_import_no_private_name_of_another():
    found = []
    for fn in sorted(os.listdir(ADAPTERS_DIR)):
        if fn.endswith(".py"):
            with open(os.path.join(ADAPTERS_DIR, fn), encoding="utf-8") as f:
                tree = ast.parse(f.read())
            found += [f"{fn}:{n.lineno} {a.name}" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)
                      for a in n.names if a.name.startswith("_") and not a.name.startswith("__")]
    assert found == []


def test_the_config_side_reads_the_families_without_torch():
    code = ("import sys, stepscope.tracer.config_facts, stepscope.tracer.adapters.facts; "
            "assert 'torch' not in sys.modules, 'torch imported'; print('ok')")
    res = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert res.returncode == 0 and res.stdout.strip() == "ok", res.stderr[-2000:]


def test_every_adapter_model_type_has_checked_config_rules():
    for model_type in registered_adapters():
        assert model_type in config_rule_table.CHECKED, model_type


def test_a_family_is_one_class_that_registers_itself(monkeypatch):
    monkeypatch.setattr(adapter_base, "_REGISTERED", registered_adapters())  # a copy, restored afterwards

    class ToyAdapter(Adapter):
        family = "toy"
        model_types = ("toy_registry_test",)

    assert registered_adapters()["toy_registry_test"] is ToyAdapter
    with pytest.raises(TypeError, match="two adapters"):
        type("OtherToyAdapter", (Adapter,), {"family": "toy2", "model_types": ("toy_registry_test",)})
    with pytest.raises(TypeError, match="unknown module roles"):
        type("TypoAdapter", (Adapter,), {"modules": {"ln_1": "ln_1"}})
    model = tiny_model("llama")
    model.config.model_type = "toy_registry_test"
    assert isinstance(adapter_for(model), ToyAdapter)
    monkeypatch.undo()
    assert "toy_registry_test" not in registered_adapters()


def test_slots_compose():
    assert all(s.shape == BLOCK_NAMES[s.name] for s in BLOCK_SLOTS if s.where != "inside")
    assert RESID_MID not in without(BLOCK_SLOTS, RESID_MID) and len(without(BLOCK_SLOTS, RESID_MID)) == len(BLOCK_SLOTS) - 1
    moved = replacing(BLOCK_SLOTS, RESID_MID.at("mlp"))
    assert [s.name for s in moved] == [s.name for s in BLOCK_SLOTS] and RESID_MID.at("mlp") in moved
    assert BLOCK_SLOTS[0] == RESID_PRE and BLOCK_SLOTS[-1] == RESID_POST and MLP_OUT in BLOCK_SLOTS


def test_block_hooks_come_from_the_slots_at_the_named_modules():
    model = tiny_model("llama")
    a = adapter_for(model)
    layer = a.layers()[0]
    points = a.block_hooks(layer)
    assert [p.name for p in points] == [
        "hook_resid_pre", "ln1.hook_normalized", "attn.hook_q", "attn.hook_k", "hook_attn_out", "hook_resid_mid",
        "ln2.hook_normalized", "mlp.hook_pre", "mlp.hook_pre_linear", "mlp.hook_post", "hook_mlp_out", "hook_resid_post",
    ]
    by_name = {p.name: p for p in points}
    assert by_name["hook_resid_mid"].module is layer.post_attention_layernorm and by_name["hook_resid_mid"].where == "in"
    assert by_name["hook_mlp_out"].module is layer.mlp and by_name["hook_resid_pre"].module is layer


@pytest.mark.parametrize("family,layout", [
    ("llama", Layout()),
    ("gpt2", Layout(qkv="conv1d", qkv_bias=True, out_bias=True, conv1d=True)),
    ("gpt_neox", Layout(qkv="fused_heads", qkv_bias=True, out_bias=True)),
    ("phi3", Layout(qkv="fused", mlp_fused=True)),
    ("qwen2", Layout(qkv_bias=True)),
])
def test_adapters_write_the_projection_layout(family, layout):
    facts = adapter_for(tiny_model(family)).facts()
    assert Layout.from_fact(facts["layout"]) == layout
    assert facts["generic_fallback"] is False and not is_generic_fallback(facts)


def test_the_layout_fact_is_read_defensively():
    assert Layout.from_fact(None) == Layout() == Layout.from_fact({})
    assert Layout.from_fact({"qkv": ["x"], "qkv_bias": 1}) == Layout(qkv_bias=True)
    assert Layout.from_fact({"qkv": "fused_heads"}).qkv == "fused_heads"


def test_readers_take_moe_and_fallback_facts_not_family_names():
    assert renormalises_top_k({"family": "mixtral"}) is None  # an older trace that does not say
    assert renormalises_top_k({"norm_topk_prob": True}) is True
    assert renormalises_top_k({"norm_topk_prob": False}) is False
    assert "renormalised" in experts_fact({"n_experts": 8, "experts_per_token": 2, "norm_topk_prob": True})
    assert "renormalised" not in experts_fact({"family": "mixtral", "n_experts": 8, "experts_per_token": 2})
    assert adapter_for(tiny_model("mixtral")).facts()["norm_topk_prob"] is True
    assert is_generic_fallback({"generic_fallback": True}) and not is_generic_fallback({"family": "generic"})
    assert is_generic_fallback({"final_norm_found": True})  # older generic traces: only the fallback wrote it


def test_the_generic_fallback_says_so_in_its_facts():
    with pytest.warns(GenericFallbackWarning):
        facts = adapter_for(tiny_model("starcoder2")).facts()
    assert facts["generic_fallback"] is True and is_generic_fallback(facts)
