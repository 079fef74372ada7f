"""Every supported family, traced from a tiny random model, against independent recomputation.

Per family: block equations from the weights (tests/support/family_refs.py), decode steps equal to one
full no-cache forward, greedy tokens equal to `model.generate`, the manifest's facts. Also: the
checks reject wrong tensors, sliding windows show in the pattern, the generic fallback,
disk-offloaded device maps, bfloat16 and float16 (tolerances: docs/FIDELITY.md).
"""

from __future__ import annotations

import dataclasses
import warnings

import numpy as np
import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForMaskedLM

from stepscope.tracer.adapters.base import UnsupportedModel
from stepscope.tracer.adapters.generic import GenericFallbackWarning, find_layers
from stepscope.tracer.adapters.registry import adapter_for
from stepscope.tracer.names import BLOCK_NAMES, FINAL_NAMES, SAMPLING_NAMES, shape_doc
from tests.support.family_checks import TOLERANCE, CheckFailed, Checks, check_block, check_head_and_final, check_step_matches_full
from tests.support.family_matrix import (
    FAMILIES,
    GENERIC,
    NEW_TOKENS,
    check_greedy,
    check_recomputation,
    check_steps,
    trace_family,
    verify,
)
from tests.support.family_refs import block_ref, head_ref, randomize_norms, rotary_tables
from tests.support.tiny_models import tiny_model

BY_KEY = {f.key: f for f in FAMILIES + GENERIC}
KEYS = [f.key for f in FAMILIES]

# facts each family's manifest must state
EXPECTED_FACTS = {
    "gpt2": dict(family="gpt2", positional="absolute", norm="layernorm", gated_mlp=False, parallel_attn_mlp=False, rotary_dim=None),
    "mistral": dict(family="mistral", sliding_window=4, layer_types=["sliding_attention"] * 2),
    "qwen2": dict(family="qwen2", sliding_window=None),
    "qwen3": dict(family="qwen3", d_head=16),
    "phi3": dict(family="phi3", gated_mlp=True, d_mlp=128, rotary_dim=8),  # partial rotary
    "llama": dict(family="llama", positional="rotary", norm="rmsnorm", gated_mlp=True, n_kv_heads=2, rotary_dim=16),
    "gemma2": dict(
        family="gemma2", sliding_window=4, layer_types=["sliding_attention", "full_attention"], embed_scale=8.0,
        final_logit_softcapping=3.0, attn_logit_softcapping=2.0, act="gelu_pytorch_tanh",
    ),
    "gemma3": dict(family="gemma3", sliding_window=4, layer_types=["sliding_attention", "full_attention"], embed_scale=8.0),
    "gpt_neox": dict(family="gpt_neox", norm="layernorm", parallel_attn_mlp=True, rotary_dim=4, gated_mlp=False),
    "gpt_neox_sequential": dict(family="gpt_neox", parallel_attn_mlp=False, rotary_dim=4),
    "mixtral": dict(family="mixtral", n_experts=4, experts_per_token=2),
    "qwen3_moe": dict(family="qwen3_moe", n_experts=4, experts_per_token=2, norm_topk_prob=False),
}
EXTRAS = {
    "qwen3": {"attn.hook_q_normed", "attn.hook_k_normed"},
    "gemma2": {f"{p}.{h}" for p in ("ln1_post", "ln2_post") for h in ("hook_scale", "hook_normalized", "hook_out")},
    "gemma3": {f"{p}.{h}" for p in ("ln1_post", "ln2_post") for h in ("hook_scale", "hook_normalized", "hook_out")}
    | {"attn.hook_q_normed", "attn.hook_k_normed"},
    "mixtral": {"mlp.hook_router_probs", "mlp.hook_expert_ids"},
    "qwen3_moe": {"mlp.hook_router_probs", "mlp.hook_expert_ids", "attn.hook_q_normed", "attn.hook_k_normed"},
}

_CACHE: dict = {}
_TRACES: list = []  # the module's trace directory (set by the fixture below)


@pytest.fixture(scope="module", autouse=True)
def _trace_dir(tmp_path_factory):
    _TRACES.append(tmp_path_factory.mktemp("family-traces"))
    yield
    _CACHE.clear()


def traced(key: str, dtype: torch.dtype = torch.float32):
    """One trace per (family, dtype) for the whole module; each test runs its own checks on it."""
    if (key, dtype) not in _CACHE:
        out = _TRACES[-1] / f"{key}-{str(dtype).replace('torch.', '')}"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            _CACHE[key, dtype] = trace_family(BY_KEY[key], dtype, out=str(out))
    t = _CACHE[key, dtype]
    t.checks = Checks(dtype)
    return t


@pytest.mark.parametrize("key", KEYS)
def test_recomputation_from_weights(key):
    t = traced(key)
    check_recomputation(t)
    assert t.checks.passed["attn_out = z·W_O (+b)"] == 2 * len(t.adapter.layers())  # full forward + prefill


@pytest.mark.parametrize("key", KEYS)
def test_decode_steps_equal_full_forward(key):
    t = traced(key)
    assert len(t.steps) == NEW_TOKENS or t.generated[-1] in t.trace.manifest["tokenizer"]["eos_token_ids"]
    check_steps(t)


@pytest.mark.parametrize("key", KEYS)
def test_greedy_tokens_equal_generate(key):
    check_greedy(traced(key))


def _dims(facts: dict, t: int, s: int) -> dict:
    return {
        "T": t, "S": s, "d_model": facts["d_model"], "n_heads": facts["n_heads"], "n_kv_heads": facts["n_kv_heads"],
        "d_head": facts["d_head"], "d_mlp": facts["d_mlp"], "vocab": facts["vocab_size"], "n_experts": facts["n_experts"],
        "top_k_experts": facts.get("experts_per_token"), "n_layers": facts["n_layers"], "1": 1,
    }


@pytest.mark.parametrize("key", KEYS)
def test_manifest_names_shapes_and_facts(key):
    t = traced(key)
    facts = t.trace.model
    for fact, value in EXPECTED_FACTS[key].items():
        assert facts[fact] == value, fact
    assert facts["data_flow"] and all(isinstance(line, str) for line in facts["data_flow"])
    assert facts["missing_names"] == []
    step = t.trace.steps[0]
    t_len = t.trace.prompt_len
    local = set(BLOCK_NAMES) - set(facts["not_applicable"])
    assert EXTRAS.get(key, set()) <= local
    assert not (set().union(*EXTRAS.values()) - EXTRAS.get(key, set())) & local  # no other family's extras
    want = {f"blocks.{i}.{n}" for i in range(facts["n_layers"]) for n in local}
    want |= set(FINAL_NAMES) | set(SAMPLING_NAMES) - {"logit_lens.resid"} | {"hook_embed"}
    result_layers = {i for i, layer in enumerate(t.adapter.layers()) if t.adapter.result_hook(layer)}
    want |= {f"blocks.{i}.attn.hook_result" for i in result_layers}
    if facts.get("lens"):  # hook_result computed by the reader from the recorded input of W_O
        want |= {f"blocks.{i}.attn.hook_o_input" for i in result_layers}
    if facts["positional"] == "absolute":
        want.add("hook_pos_embed")
    assert set(step.names) == want
    dims = _dims(facts, t_len, t_len)
    for name in step.names:
        doc = shape_doc(name)
        if name in SAMPLING_NAMES or not doc:
            continue
        shape = tuple(dims[d.strip()] for d in doc.split("]")[0].strip("[").split(","))
        assert step.shape(name) == shape, name


def test_parallel_block_has_no_resid_mid():
    t = traced("gpt_neox")
    assert "hook_resid_mid" in t.trace.model["not_applicable"]
    assert not any(n.endswith("hook_resid_mid") for n in t.trace.steps[0].names)
    assert "hook_resid_mid" not in traced("gpt_neox_sequential").trace.model["not_applicable"]


@pytest.mark.parametrize("key, window_layers", [("mistral", [0, 1]), ("gemma2", [0]), ("gemma3", [0])])
def test_sliding_window_shows_in_pattern(key, window_layers):
    """Local layers attend the last `window` positions: zeros before, S = window at decode (the cache keeps the window)."""
    t = traced(key)
    window = t.trace.model["sliding_window"]
    n_layers = t.trace.model["n_layers"]
    for layer in range(n_layers):
        prefill = t.trace.steps[0][f"blocks.{layer}.attn.hook_pattern"]  # [H, T, T]
        last = t.trace.steps[-1][f"blocks.{layer}.attn.hook_pattern"]  # [H, 1, S]
        end = t.trace.steps[-1].positions[1]
        if layer in window_layers:
            assert np.all(prefill[:, -1, : prefill.shape[-1] - window] == 0)
            assert np.all(prefill[:, -1, -window:] > 0)
            assert last.shape[-1] == window
        else:
            assert np.all(prefill[:, -1] > 0)
            assert last.shape[-1] == end


@pytest.mark.parametrize("key", ["mixtral", "qwen3_moe"])
def test_moe_router_and_expert_ids(key):
    t = traced(key)
    step = t.trace.steps[0]
    probs, ids = step["blocks.0.mlp.hook_router_probs"], step["blocks.0.mlp.hook_expert_ids"]
    assert probs.shape == (t.trace.prompt_len, 4) and ids.shape == (t.trace.prompt_len, 2)
    assert ids.dtype == np.int64 and set(np.unique(ids)) <= {0, 1, 2, 3}  # stored as integers on disk
    assert t.full["blocks.0.mlp.hook_expert_ids"].dtype == torch.int64  # the recorder keeps ids as integers
    assert np.array_equal(ids.astype(np.int64), t.full["blocks.0.mlp.hook_expert_ids"][: t.trace.prompt_len].numpy())


# -- the checks themselves reject wrong tensors -------------------------------------------------
def _tampered(rec: dict, name: str, delta: float = 1e-3) -> dict:
    out = dict(rec)
    out[name] = rec[name].clone()
    out[name].view(-1)[0] += delta * max(rec[name].abs().max().item(), 1.0)
    return out


@pytest.mark.parametrize(
    "name", ["blocks.1.hook_attn_out", "blocks.0.attn.hook_rot_k", "blocks.1.mlp.hook_pre_linear", "blocks.0.attn.hook_pattern", "logits"]
)
def test_checks_reject_a_tampered_tensor(name):
    t = dataclasses.replace(traced("llama"))
    check_recomputation(t)  # passes as recorded
    t = dataclasses.replace(t, full=_tampered(t.full, name))
    with pytest.raises(CheckFailed):
        check_recomputation(t)


def test_checks_reject_a_missing_window_or_softcap():
    t = traced("mistral")
    positions = torch.arange(len(t.full_ids))
    ref = dataclasses.replace(block_ref(t.model, "mistral", 0), window=None)
    with pytest.raises(CheckFailed, match="masked"):
        check_block(Checks(torch.float32), t.full, 0, ref, rotary_tables(t.model, "mistral", 0, positions), positions)
    g = traced("gemma2")
    head = dataclasses.replace(head_ref(g.model, "gemma2"), unembed=lambda x: x @ g.model.lm_head.weight.double().T)
    with pytest.raises(CheckFailed, match="logits"):
        check_head_and_final(Checks(torch.float32), g.full, head, g.full_ids, torch.arange(len(g.full_ids)), 2)


def test_checks_reject_a_step_shifted_by_one_position():
    t = traced("qwen2")
    entry, step = t.trace.steps[1], t.steps[1]
    start, end = entry.positions
    with pytest.raises(CheckFailed):
        check_step_matches_full(Checks(torch.float32), step, t.full, start - 1, end - 1)


# -- generic fallback ---------------------------------------------------------------------------
@pytest.mark.parametrize("key", [f.key for f in GENERIC])
def test_generic_fallback_traces_and_says_what_is_missing(key):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        t = verify(BY_KEY[key], out=str(_TRACES[-1] / f"{key}-generic"))
    said = [str(w.message) for w in caught if issubclass(w.category, GenericFallbackWarning)]
    assert len(said) == 1 and "hook_mlp_out" in said[0]  # once per model, naming what is missing
    facts = t.trace.model
    assert facts["family"] == "generic" and "hook_mlp_out" in facts["missing_names"]
    want = {f"blocks.{i}.{n}" for i in range(2) for n in ("hook_resid_pre", "hook_resid_post")}
    want |= {"hook_embed", "ln_final.hook_normalized", "logits"} | set(SAMPLING_NAMES) - {"logit_lens.resid"}
    names = set(t.trace.steps[0].names)
    extra = names - want  # attention (test_generic_attention.py) and the final norm's scale/out
    assert want <= names and all(".attn.hook_" in n or n.startswith("ln_final.") for n in extra)
    assert t.checks.passed["decode step = full forward rows"] > 0 and t.checks.passed["logits = unembed(ln_final)"] == 2


def test_generic_finds_the_layers_not_a_longer_expert_list():
    class Block(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.experts = torch.nn.ModuleList(torch.nn.Linear(2, 2) for _ in range(8))  # longer than the layers

    class Toy(torch.nn.Module):
        config = AutoConfig.for_model("llama", num_hidden_layers=3)

        def __init__(self):
            super().__init__()
            self.layers = torch.nn.ModuleList(Block() for _ in range(3))

    toy = Toy()
    parent, layers = find_layers(toy)
    assert parent is toy and layers is toy.layers


def test_non_decoder_is_unsupported():
    config = AutoConfig.for_model("bert", hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32)
    with pytest.raises(UnsupportedModel):
        adapter_for(AutoModelForMaskedLM.from_config(config))


# -- device map with disk offload, bfloat16 -------------------------------------------------------
def test_device_map_with_disk_offload_records_the_same_tensors(tmp_path):
    model = randomize_norms(tiny_model("llama"))  # the same weights as trace_family's
    model.save_pretrained(tmp_path / "model")
    device_map = {
        "model.embed_tokens": "cpu",
        "model.rotary_emb": "cpu",
        "model.layers.0": "cpu",
        "model.layers.1": "disk",
        "model.norm": "cpu",
        "lm_head": "cpu",
    }
    offloaded = AutoModelForCausalLM.from_pretrained(
        tmp_path / "model", device_map=device_map, offload_folder=str(tmp_path / "offload")
    )
    assert offloaded.model.layers[1].mlp.up_proj.weight.device.type == "meta"  # really on disk
    plain = traced("llama")
    disk = trace_family(BY_KEY["llama"], model=offloaded, out=str(tmp_path / "trace"))
    assert disk.generated == plain.generated == disk.expected
    assert len(disk.steps) == len(plain.steps)
    for a, b in zip(plain.steps, disk.steps):
        assert a.keys() == b.keys()
        for name in a:
            assert torch.equal(a[name], b[name]), name


@pytest.mark.parametrize("dtype, stored", [(torch.bfloat16, "float32"), (torch.float16, "float16")], ids=["bf16", "fp16"])
@pytest.mark.parametrize("key", KEYS)
def test_half_precision_traced_readable_and_within_tolerance(key, dtype, stored):
    """bfloat16 is stored as float32 (numpy has no bfloat16), float16 as float16; tolerances: docs/FIDELITY.md."""
    t = traced(key, dtype)
    assert t.trace.manifest["dtype"] == {"model": str(dtype).replace("torch.", ""), "stored": stored}
    assert t.trace.steps[0].dtype("logits") == stored
    assert t.trace.steps[-1]["blocks.1.hook_resid_post"].dtype == np.dtype(stored)
    check_recomputation(t)
    check_steps(t)
    check_greedy(t)  # against generate with eager attention: the same half-precision arithmetic
    assert t.checks.worst["recompute"] > TOLERANCE[torch.float32]["recompute"]  # it really ran in half precision
