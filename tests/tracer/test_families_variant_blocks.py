"""The families whose blocks vary the common shape (OLMo 2, SmolLM3, GLM-4, gpt-oss, DeepSeek-V3,
Qwen3-Next): the same proof as test_families.py.

Per family: every block recomputed from the weights (tests/support/family_refs_variant.py), decode steps equal
to one full no-cache forward, greedy tokens equal to `model.generate`, the manifest's names and facts.
"""

from __future__ import annotations

import dataclasses
import warnings

import pytest
import torch

from tests.support.family_checks import CheckFailed, Checks
from tests.support.family_matrix import VARIANT_FAMILIES, check_greedy, check_recomputation, check_steps, trace_family, verify

BY_KEY = {f.key: f for f in VARIANT_FAMILIES}
KEYS = list(BY_KEY)
_CACHE: dict = {}

EXPECTED_FACTS = {
    "olmo2": dict(family="olmo2", post_norms=True, pre_norms=False, positional="rotary"),
    "smollm3": dict(family="smollm3", nope_layers=[1], sliding_window=None, layer_types=["full_attention"] * 2),
    "glm4": dict(family="glm4", post_norms=True, rope_interleaved=True, rotary_dim=8),
    "deepseek_v3": dict(family="deepseek_v3", d_head=24, d_head_v=12, kv_lora_rank=16, q_lora_rank=24, n_experts=4,
                        experts_per_token=2, n_shared_experts=1, first_k_dense_replace=1, router_scoring="sigmoid"),
    "qwen3_next": dict(family="qwen3_next", layers_without_attention=[0], layer_types=["linear_attention", "full_attention"],
                       n_experts=4, experts_per_token=2, rotary_dim=4),
    "gpt_oss": dict(family="gpt_oss", sliding_window=4, layer_types=["sliding_attention", "full_attention"], n_experts=4, experts_per_token=2),
}
EXTRAS = {  # block names beyond the common vocabulary, and common names the family does not have
    "olmo2": ({"attn.hook_q_normed", "attn.hook_k_normed", "ln1_post.hook_normalized", "ln2_post.hook_normalized"},
              {"ln1.hook_normalized", "ln2.hook_normalized"}),
    "smollm3": (set(), {"ln1_post.hook_normalized", "attn.hook_q_normed"}),
    "glm4": ({"ln1_post.hook_normalized", "ln2_post.hook_normalized"}, {"attn.hook_q_normed", "mlp.hook_router_probs"}),
    "gpt_oss": ({"mlp.hook_router_probs", "mlp.hook_expert_ids"}, {"mlp.hook_pre", "ln1_post.hook_normalized"}),
    "qwen3_next": ({"linear_attn.hook_core_out", "linear_attn.hook_gate", "linear_attn.hook_state", "mlp.hook_router_probs"},
                   {"mlp.hook_pre", "ln1_post.hook_normalized"}),  # block 0: linear attention (no map: see below)
    "deepseek_v3": ({"attn.hook_q_latent", "attn.hook_kv_latent", "mlp.hook_pre"}, {"attn.hook_k", "attn.hook_q_normed"}),
}


@pytest.fixture(scope="module")
def traced(tmp_path_factory):
    root = tmp_path_factory.mktemp("variant-families")

    def get(key: str):
        if key not in _CACHE:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                _CACHE[key] = trace_family(BY_KEY[key], out=str(root / key))
        t = _CACHE[key]
        t.checks = Checks(torch.float32)
        return t

    yield get
    _CACHE.clear()


@pytest.mark.parametrize("key", KEYS)
def test_recomputation_from_weights(traced, key):
    t = traced(key)
    check_recomputation(t)
    n_layers = len(t.adapter.layers())
    with_map = n_layers - len(t.trace.model.get("layers_without_attention") or [])
    assert sum(n for kind, n in t.checks.passed.items() if kind.startswith("attn_out")) == 2 * n_layers  # full + prefill
    assert sum(n for kind, n in t.checks.passed.items() if kind.startswith("rot")) == 4 * with_map


@pytest.mark.parametrize("key", KEYS)
def test_decode_steps_equal_full_forward(traced, key):
    t = traced(key)
    check_steps(t)
    assert t.checks.passed["decode step = full forward rows"] > 0


@pytest.mark.parametrize("key", KEYS)
def test_greedy_tokens_equal_generate(traced, key):
    check_greedy(traced(key))


@pytest.mark.parametrize("key", KEYS)
def test_manifest_facts_and_names(traced, key):
    t = traced(key)
    facts = t.trace.model
    for fact, value in EXPECTED_FACTS[key].items():
        assert facts[fact] == value, fact
    assert facts["missing_names"] == []
    have, lack = EXTRAS[key]
    names = {n.split(".", 2)[2] for n in t.trace.steps[0].names if n.startswith("blocks.0.")}
    assert have <= names and not (lack & names)
    assert have.isdisjoint(facts["not_applicable"]) and lack <= set(facts["not_applicable"])


@pytest.mark.parametrize("key", KEYS)
def test_bfloat16_within_tolerance(tmp_path, key):
    """The same checks in bfloat16 (tolerances: docs/FIDELITY.md), greedy tokens against eager generate."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t = verify(BY_KEY[key], torch.bfloat16, out=str(tmp_path / key))
    assert t.trace.manifest["dtype"]["model"] == "bfloat16" and t.checks.worst["recompute"] > 1e-5  # really bf16


def test_smollm3_nope_layer_is_not_rotated(traced):
    """On the NoPE layer the attention receives q/k unrotated; on the RoPE layer they differ."""
    step = traced("smollm3").trace.steps[0]
    assert (step["blocks.1.attn.hook_rot_q"] == step["blocks.1.attn.hook_q"]).all()
    assert not (step["blocks.0.attn.hook_rot_q"] == step["blocks.0.attn.hook_q"]).all()


def test_glm4_rope_is_interleaved_not_rotate_half(traced):
    """The interleaved reference is the one that matches: rotate-half would not (the check can fail)."""
    from tests.support.family_refs import rope, rotary_tables
    from tests.support.family_refs_variant import rope_interleaved

    t = traced("glm4")
    q = t.full["blocks.0.attn.hook_q"]
    cos, sin = rotary_tables(t.model, "glm4", 0, torch.arange(len(q)))
    got = t.full["blocks.0.attn.hook_rot_q"]
    assert torch.allclose(got, rope_interleaved(q, cos, sin), atol=1e-5)
    assert not torch.allclose(got, rope(q, cos, sin), atol=1e-3)


def test_gpt_oss_sink_column_is_labelled_and_carries_mass(traced):
    t = traced("gpt_oss")
    assert "sink" in t.trace.model["attention_sink"]
    n = t.trace.prompt_len
    for layer, keys in ((0, 4), (1, n)):  # sliding layer: the window's keys; full layer: all of them
        pattern = t.trace.steps[0][f"blocks.{layer}.attn.hook_pattern"]  # [H, T, T + 1]
        assert pattern.shape[-1] == n + 1 and (pattern[..., -1] > 0).all()
        assert ((pattern[:, -1, :-1] > 0).sum(-1) == keys).all()
        last = t.trace.steps[-1][f"blocks.{layer}.attn.hook_pattern"]  # decode: [H, 1, S + 1]
        assert last.shape[-1] == (4 if layer == 0 else t.trace.steps[-1].positions[1]) + 1
    check_steps(t)
    assert t.checks.passed["sink column = full forward rows"] == 2 * 2 * len(t.steps)  # scores + pattern, 2 layers


def test_gpt_oss_experts_recomputed(traced):
    t = traced("gpt_oss")
    check_recomputation(t)
    assert t.checks.passed["mlp_out = Σ w·expert(ln2)"] == 2 * 2 and t.checks.passed["expert_ids = top-k(router_probs)"] == 4


def test_deepseek_mla_latents_and_experts(traced):
    t = traced("deepseek_v3")
    step = t.trace.steps[0]
    n = t.trace.prompt_len
    assert step.shape("blocks.0.attn.hook_kv_latent") == (n, 16) and step.shape("blocks.0.attn.hook_q_latent") == (n, 24)
    assert step.shape("blocks.0.attn.hook_rot_q") == (n, 4, 24) and step.shape("blocks.0.attn.hook_z") == (n, 4, 12)
    assert "mlp.hook_pre" in {x.split(".", 2)[2] for x in step.names if x.startswith("blocks.0.")}  # dense first layer
    assert {"blocks.1.mlp.hook_shared_out", "blocks.1.mlp.hook_router_probs", "blocks.1.mlp.hook_expert_ids"} <= set(step.names)
    check_recomputation(t)
    assert t.checks.passed["mlp_out = Σ w·expert(ln2) + shared"] == 2 and t.checks.passed["rot_k = [k_nope | RoPE(k_pe)]"] == 4


def test_qwen3_next_hybrid_blocks(traced):
    """Block 0 (Gated DeltaNet): output, gate and recurrent state, no attention map, and the manifest says
    why; block 1 (gated full attention): the pattern; the states at every step recomputed token by token."""
    t = traced("qwen3_next")
    facts = t.trace.model
    assert "no attention map" in facts["no_attention_reason"]
    for step in t.trace.steps:
        assert step.shape("blocks.0.linear_attn.hook_state") == (4, 8, 8)
        assert "blocks.1.attn.hook_pattern" in step.names and not any(n.startswith("blocks.0.attn.") for n in step.names)
    check_steps(t)
    assert t.checks.passed["state = delta-rule state after the step"] == len(t.steps)
    check_recomputation(t)
    assert t.checks.passed["core_out = gated delta rule"] == 2 and t.checks.passed["attn_out = (z·σ(gate))·W_O"] == 2


@pytest.mark.parametrize(
    "key, name",
    [
        ("olmo2", "blocks.0.attn.hook_q_normed"),
        ("glm4", "blocks.1.attn.hook_rot_k"),
        ("gpt_oss", "blocks.0.attn.hook_pattern"),  # the first entry of the first row: a key, not the sink
        ("deepseek_v3", "blocks.1.attn.hook_kv_latent"),
        ("qwen3_next", "blocks.0.linear_attn.hook_core_out"),
        ("qwen3_next", "blocks.0.linear_attn.hook_state"),
    ],
)
def test_checks_reject_a_tampered_tensor(traced, key, name):
    """The checks can fail: one entry of one recorded tensor moved by 1e-3 of its scale is caught."""
    t = dataclasses.replace(traced(key))
    full, steps = dict(t.full), [dict(s) for s in t.steps]
    rec = steps[0] if name.endswith("hook_state") else full
    rec[name] = rec[name].clone(memory_format=torch.contiguous_format)
    rec[name].view(-1)[0] += 1e-3 * max(rec[name].abs().max().item(), 1.0)
    t = dataclasses.replace(t, full=full, steps=steps)
    with pytest.raises(CheckFailed):
        check_steps(t) if name.endswith("hook_state") else check_recomputation(t)
