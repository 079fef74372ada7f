"""Attention for any model: the traced attention function against transformers' own eager
implementations (MLA head sizes, sinks, soft-caps, windows, a missing mask), its refusals, and the
generic fallback recording attention for architectures stepscope has no adapter for."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

from stepscope.tracer.adapters.generic import GenericAdapter, GenericFallbackWarning, find_attention
from stepscope.tracer.attention import RECORDERS, AttentionNotReproducible, stepscope_attention
from tests.support.family_matrix import GENERIC, verify

BY_KEY = {f.key: f for f in GENERIC}
ATTN = ("attn.hook_v", "attn.hook_attn_scores", "attn.hook_pattern", "attn.hook_z")


class Recording:
    """Stands in for the recorder: keeps what the traced function hands over."""

    def attention(self, module, query, key, value, scores, pattern, z):
        self.got = dict(scores=scores, pattern=pattern, z=z)


def _module(n_heads=4, n_kv=2, sinks=None):
    m = nn.Module()
    m.num_key_value_groups = n_heads // n_kv
    m.is_causal = True
    if sinks is not None:
        m.sinks = nn.Parameter(sinks)
    RECORDERS[m] = Recording()
    return m.eval()


def _qkv(d_qk=8, d_v=8, t=5, n_heads=4, n_kv=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(1, n_heads, t, d_qk, generator=g)  # [B, H, T, d_qk]
    k = torch.randn(1, n_kv, t, d_qk, generator=g)
    v = torch.randn(1, n_kv, t, d_v, generator=g)  # [B, n_kv, S, d_v]
    causal = torch.full((t, t), float("-inf")).triu(1)[None, None]  # [1, 1, T, S] additive
    return q, k, v, causal


def test_mla_value_head_size_differs_from_query_key():
    """DeepSeek MLA: d_qk = 24, d_v = 12 (this raised a RuntimeError before)."""
    from transformers.models.deepseek_v3.modeling_deepseek_v3 import eager_attention_forward

    m = _module()
    q, k, v, mask = _qkv(d_qk=24, d_v=12)
    z, weights = stepscope_attention(m, q, k, v, mask, scaling=0.3)
    want_z, want_w = eager_attention_forward(m, q, k, v, mask, scaling=0.3)
    assert z.shape == (1, 5, 4, 12)
    torch.testing.assert_close(z, want_z)
    torch.testing.assert_close(weights, want_w)


def test_sinks_add_a_labelled_last_column_and_match_gpt_oss():
    from transformers.models.gpt_oss.modeling_gpt_oss import eager_attention_forward

    m = _module(sinks=torch.tensor([0.5, -1.0, 2.0, 0.0]))
    q, k, v, mask = _qkv()
    z, weights = stepscope_attention(m, q, k, v, mask, scaling=0.35, s_aux=m.sinks)
    want_z, want_w = eager_attention_forward(m, q, k, v, mask, scaling=0.35)
    torch.testing.assert_close(z, want_z)
    torch.testing.assert_close(weights, want_w)  # what the model gets back has no sink column
    got = RECORDERS[m].got
    assert got["pattern"].shape[-1] == 6 and got["scores"].shape[-1] == 6  # S + the sink
    torch.testing.assert_close(got["pattern"].sum(-1), torch.ones(1, 4, 5))
    torch.testing.assert_close(got["pattern"][..., :-1], want_w)
    torch.testing.assert_close(got["scores"][0, :, :, -1], m.sinks.detach()[:, None].expand(4, 5))
    assert torch.isneginf(got["scores"][0, :, 0, 1:5]).all()  # the causal mask spares the sink column


def test_softcap_matches_gemma2():
    from transformers.models.gemma2.modeling_gemma2 import eager_attention_forward

    m = _module()
    q, k, v, mask = _qkv(seed=1)
    q = q * 4  # large scores, so the cap bends them
    z, weights = stepscope_attention(m, q, k, v, mask, scaling=0.35, softcap=2.0)
    want_z, want_w = eager_attention_forward(m, q, k, v, mask, scaling=0.35, softcap=2.0)
    torch.testing.assert_close(z, want_z)
    torch.testing.assert_close(weights, want_w)
    assert RECORDERS[m].got["scores"][torch.isfinite(RECORDERS[m].got["scores"])].abs().max() <= 2.0


@pytest.mark.parametrize("window", [None, 2])
def test_missing_mask_on_a_causal_module_is_built_causal_and_windowed(window):
    m = _module()
    q, k, v, mask = _qkv(seed=2)
    if window:
        mask = mask.clone()
        mask[..., torch.arange(5)[:, None] - torch.arange(5)[None, :] >= window] = float("-inf")
    want_z, want_w = stepscope_attention(_module(), q, k, v, mask, scaling=0.35)
    z, weights = stepscope_attention(m, q, k, v, None, scaling=0.35, sliding_window=window)
    torch.testing.assert_close(z, want_z)
    torch.testing.assert_close(weights, want_w)
    assert (weights[0, :, 0, 1:] == 0).all()  # no peeking at later positions


@pytest.mark.parametrize(
    "kwargs, said",
    [
        (dict(position_bias=torch.zeros(1, 4, 5, 5)), "position bias"),
        (dict(indices=torch.zeros(1, 5, 2, dtype=torch.long)), "sparse key"),
        (dict(cu_seq_lens_q=torch.tensor([0, 2, 5])), "packed sequences"),
    ],
)
def test_refuses_what_it_cannot_reproduce_in_one_line(kwargs, said):
    q, k, v, mask = _qkv()
    with pytest.raises(AttentionNotReproducible) as err:
        stepscope_attention(_module(), q, k, v, mask, scaling=0.35, **kwargs)
    assert said in str(err.value) and "\n" not in str(err.value)


def test_dropout_refused_in_training_ignored_in_eval():
    q, k, v, mask = _qkv()
    m = _module().train()
    with pytest.raises(AttentionNotReproducible, match="dropout"):
        stepscope_attention(m, q, k, v, mask, scaling=0.35, dropout=0.1)
    z, _ = stepscope_attention(_module(), q, k, v, mask, scaling=0.35, dropout=0.1)  # eval: the model drops nothing
    torch.testing.assert_close(z, stepscope_attention(_module(), q, k, v, mask, scaling=0.35)[0])


def test_finds_the_module_that_calls_the_attention_interface():
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    class Mixer(nn.Module):  # a custom architecture's attention, named nothing like "attention"
        def __init__(self):
            super().__init__()
            self.proj = nn.Linear(4, 4)

        def forward(self, x):
            attention_interface = ALL_ATTENTION_FUNCTIONS["sdpa"]
            return attention_interface

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.norm = nn.LayerNorm(4)
            self.ff = nn.Sequential(nn.Linear(4, 4))
            self.mix = Mixer()

    block = Block()
    assert find_attention(block) is block.mix
    assert find_attention(block.ff) is None
    assert find_attention(block.mix) is block.mix  # a block that computes attention inline is its own module


# -- architectures stepscope has no adapter for, end to end ------------------------------------
@pytest.fixture(scope="module")
def verified(tmp_path_factory):
    root, cache = tmp_path_factory.mktemp("generic-attention"), {}

    def get(key):
        if key not in cache:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                t = verify(BY_KEY[key], out=str(root / key))
            t.said = [str(w.message) for w in caught if issubclass(w.category, GenericFallbackWarning)]
            cache[key] = t
        return cache[key]

    return get


@pytest.mark.parametrize("key", list(BY_KEY))
def test_unknown_architecture_records_attention(verified, key):
    """q/k/v, scores, pattern and z on every block that has attention, equal to the model's own eager
    attention; decode steps equal the full forward; greedy tokens equal generate (all inside verify)."""
    t = verified(key)
    assert isinstance(t.adapter, GenericAdapter)
    facts = t.trace.model
    layers = [i for i in range(facts["n_layers"]) if i not in facts["layers_without_attention"]]
    assert layers and t.checks.passed["pattern = model's eager attention"] == len(layers)
    q = "attn.hook_rot_q" if facts["positional"] == "rotary" else "attn.hook_q"
    for step in t.trace.steps:
        for i in layers:
            assert {f"blocks.{i}.{n}" for n in (q, *ATTN)} <= set(step.names)
    assert not set(ATTN) & set(facts["missing_names"]) and q not in facts["missing_names"]
    assert "hook_attn_out" in facts["missing_names"]  # what an adapter would add is still said
    assert len(t.said) == 1 and "attention" in t.said[0] and "hook_attn_out" in t.said[0]
    assert {"hook_embed", "logits", "sample.candidate_ids"} <= set(t.trace.steps[0].names)


def test_generic_fallback_on_a_hybrid_model_says_which_layers_have_no_attention_map():
    """Qwen3-Next seen by the generic fallback (its adapter set aside): the linear-attention block has no
    module calling the interface, so no attention names there, and the manifest says why."""
    from stepscope.tracer.recorder import Recorder
    from tests.support.tiny_models import tiny_model

    model = tiny_model("qwen3_next")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        adapter = GenericAdapter(model)
    facts = adapter.facts()
    assert facts["layers_without_attention"] == [0] and "Qwen3NextGatedDeltaNet" in facts["no_attention_reason"]
    recorder = Recorder(adapter)
    with torch.no_grad(), recorder.installed():
        model(torch.arange(3, 12)[None], use_cache=False)
    got = recorder.take()
    assert not any(n.startswith("blocks.0.attn.") for n in got)
    assert got["blocks.1.attn.hook_pattern"].shape == (4, 9, 9)


def test_sliding_window_through_the_interface(verified):
    """StarCoder2's window (4) reaches the traced attention through the model's own mask: zeros before it."""
    t = verified("starcoder2")
    pattern = t.trace.steps[0]["blocks.0.attn.hook_pattern"]  # [H, T, T]
    assert (pattern[:, -1, :-4] == 0).all() and (pattern[:, -1, -4:] > 0).all()
    assert t.trace.steps[-1].shape("blocks.0.attn.hook_pattern")[-1] == 4  # the cache keeps the window


def test_no_sink_no_sink_column(verified):
    t = verified("opt")
    assert t.trace.model["attention_sink"] is None
    assert t.trace.steps[0].shape("blocks.0.attn.hook_pattern")[-1] == t.trace.prompt_len


def test_generic_fallback_on_an_mla_model_matches_its_eager_attention():
    """DeepSeek-V3 seen by the generic fallback (its adapter set aside): the MLA shapes (d_v != d_qk,
    which raised a RuntimeError before) and the maps of the model's own eager attention."""
    from stepscope.tracer.recorder import Recorder
    from tests.support.tiny_models import tiny_model

    model = tiny_model("deepseek_v3")
    ids = torch.arange(3, 12)[None]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        adapter = GenericAdapter(model)
    recorder = Recorder(adapter)
    with torch.no_grad(), recorder.installed():
        model(ids, use_cache=False)
    got = recorder.take()
    model.set_attn_implementation("eager")
    with torch.no_grad():
        own = model(ids, use_cache=False, output_attentions=True).attentions
    for layer in range(2):
        p = f"blocks.{layer}.attn."
        assert got[p + "hook_rot_q"].shape == (9, 4, 24) and got[p + "hook_v"].shape == (9, 4, 12)
        assert got[p + "hook_z"].shape == (9, 4, 12)
        torch.testing.assert_close(got[p + "hook_pattern"], own[layer][0])
        torch.testing.assert_close(got[p + "hook_z"], torch.einsum("hts,shd->thd", got[p + "hook_pattern"], got[p + "hook_v"]))
