"""The family matrix: which tiny model stands for which family, how it is traced and verified.

Used by tests/tracer/test_families.py (one test per check group) and scripts/supported_models.py
(which runs `verify` for every family and writes docs/SUPPORTED_MODELS.md).
"""

from __future__ import annotations

import dataclasses
import tempfile
from dataclasses import dataclass, field

import torch

from stepscope.tracer import load_trace
from stepscope.tracer.adapters.registry import adapter_for
from stepscope.tracer.recorder import Recorder
from stepscope.tracer.session import GenerationSettings, LiveSession

from .family_checks import (
    Checks,
    check_block,
    check_generic,
    check_head_and_final,
    check_logit_lens,
    check_step_matches_full,
)
from .family_refs import block_ref, head_ref, randomize_norms, rms, rotary_tables
from .family_refs_variant import VARIANT_BLOCKS, check_linear_states, check_variant_blocks
from .tiny_models import byte_tokenizer, tiny_model

PROMPT = "Hi there"  # 8 byte tokens: with 4 new tokens the sequence outgrows the windows of 4
NEW_TOKENS = 4


@dataclass(frozen=True)
class Family:
    key: str  # FAMILY_CONFIGS key
    name: str  # shown in the table
    examples: str
    specifics: str


FAMILIES = [
    Family("gpt2", "GPT-2", "gpt2, distilgpt2", "learned absolute positions, Conv1D, LayerNorm, GELU"),
    Family("llama", "Llama / SmolLM2", "SmolLM2-135M/360M/1.7B, Llama-3.2-1B, TinyLlama", "RMSNorm, RoPE, SwiGLU, GQA"),
    Family("mistral", "Mistral", "Mistral-7B-v0.1", "sliding-window attention: the pattern shows the window"),
    Family("qwen2", "Qwen2 / Qwen2.5", "Qwen2.5-0.5B/1.5B-Instruct", "q/k/v bias"),
    Family("qwen3", "Qwen3", "Qwen3-0.6B/1.7B", "per-head q/k RMSNorm before RoPE"),
    Family("phi3", "Phi-3", "Phi-3-mini-4k-instruct, Phi-4-mini", "fused qkv_proj / gate_up_proj split into q/k/v and pre/pre_linear"),
    Family("gemma2", "Gemma 2", "gemma-2-2b(-it)", "pre+post norms, attention and final soft-caps, scaled embedding, local/global layers"),
    Family("gemma3", "Gemma 3 (text)", "gemma-3-1b-it, gemma-3-270m", "as Gemma 2, plus per-head q/k norms and per-layer-type RoPE"),
    Family("gpt_neox", "GPT-NeoX / Pythia", "pythia-70m/160m/410m", "parallel attention + MLP, partial rotary"),
    Family("gpt_neox_sequential", "GPT-NeoX (sequential)", "use_parallel_residual=false checkpoints", "sequential residual, partial rotary"),
    Family("mixtral", "Mixtral (MoE)", "Mixtral-8x7B", "router probabilities and chosen experts per token"),
    Family("qwen3_moe", "Qwen3-MoE", "Qwen3-30B-A3B", "Qwen3 attention + MoE router and experts (tested with norm_topk_prob off; Mixtral covers renormalised top-k)"),
]
# families with an adapter whose blocks vary the common shape (tests/tracer/test_families_variant_blocks.py;
# recomputed by family_refs_variant.py)
VARIANT_FAMILIES = [
    Family("olmo2", "OLMo 2", "OLMo-2-1124-7B, OLMo-2-0425-1B", "no pre-norms: post-norms after attention and MLP, RMSNorm over all heads of q and k"),
    Family("smollm3", "SmolLM3", "SmolLM3-3B", "RoPE off on every 4th layer (NoPE layers listed in the manifest)"),
    Family("glm4", "GLM-4", "GLM-4-9B-0414, GLM-Z1", "sandwich norms, interleaved partial RoPE, fused gate/up projection"),
    Family("deepseek_v3", "DeepSeek-V3", "DeepSeek-V3, DeepSeek-R1, Kimi-K2", "MLA: q/kv latents, rope/nope split, d_v != d_qk; sigmoid router, shared + routed experts"),
    Family("qwen3_next", "Qwen3-Next", "Qwen3-Next-80B-A3B", "hybrid: Gated DeltaNet blocks (output, gate, recurrent state; no attention map) and gated full attention; MoE + shared expert"),
    Family("gpt_oss", "gpt-oss", "gpt-oss-20b/120b", "attention sinks (the pattern's last column), alternating sliding/full layers, MoE with clamped SwiGLU"),
]
_GENERIC_NOTE = "records embed, resid_pre/post, attention (q/k/v as passed, scores, pattern, z), ln_final, logits"
GENERIC = [
    Family("starcoder2", "generic fallback (StarCoder2)", "any decoder without an adapter", _GENERIC_NOTE),
    Family("opt", "generic fallback (OPT)", "any decoder without an adapter", _GENERIC_NOTE),
]


@dataclass
class Traced:
    family: Family
    model: torch.nn.Module
    adapter: object
    trace: object  # tracer.reader.Trace
    steps: list[dict]  # step tensors as float64 torch (ids as int64)
    full: dict  # the full no-cache forward over the final sequence, recorded by the Recorder
    full_ids: torch.Tensor  # [N]
    generated: list[int]
    expected: list[int]  # model.generate's tokens
    dtype: torch.dtype
    checks: Checks = field(init=False)

    def __post_init__(self):
        self.checks = Checks(self.dtype)


def _torch(a) -> torch.Tensor:
    t = torch.from_numpy(a.copy())
    return t if not t.is_floating_point() else t.to(torch.float64)


def trace_family(family: Family, dtype: torch.dtype = torch.float32, model=None, out: str | None = None) -> Traced:
    """Trace PROMPT greedily for NEW_TOKENS steps, then record one full no-cache forward."""
    model = model if model is not None else randomize_norms(tiny_model(family.key)).to(dtype)
    tok = byte_tokenizer()
    out = out or tempfile.mkdtemp(prefix=f"stepscope-{family.key}-")
    session = LiveSession(model, tok, PROMPT, GenerationSettings(max_new_tokens=NEW_TOKENS), out=out, name=f"tiny-{family.key}")
    while session.step() is not None:
        pass
    session.close()
    trace = load_trace(out)
    steps = [{n: _torch(s[n]) for n in s.names} for s in trace.steps]
    ids = [t["id"] for t in trace.tokens]
    generated = ids[trace.prompt_len :]
    full_ids = torch.tensor(ids[:-1])  # the last chosen token is never fed
    recorder = Recorder(adapter_for(model))
    with torch.no_grad(), recorder.installed():
        model(full_ids[None].to(session.device), use_cache=False)
    full = {n: t.cpu().to(torch.float64) if t.is_floating_point() else t.cpu() for n, t in recorder.take().items()}
    prompt = torch.tensor([ids[: trace.prompt_len]], device=session.device)
    attn_impl = "eager" if dtype != torch.float32 else None  # bf16: compare with the same (eager) arithmetic
    previous = model.config._attn_implementation
    if attn_impl:
        model.set_attn_implementation(attn_impl)
    with torch.no_grad():
        expected = model.generate(prompt, max_new_tokens=NEW_TOKENS, do_sample=False)[0, trace.prompt_len :].tolist()
    if attn_impl:
        model.set_attn_implementation(previous)
    return Traced(family, model, session.adapter, trace, steps, full, full_ids, generated, expected, dtype)


def check_recomputation(t: Traced) -> None:
    """Every block's equations, embedding and logits, on the full forward and on the prefill step."""
    head = _head(t)
    n_layers = len(t.adapter.layers())
    prompt_len = t.trace.prompt_len
    for rec, ids in ((t.full, t.full_ids), (t.steps[0], t.full_ids[:prompt_len])):
        positions = torch.arange(len(ids))
        check_head_and_final(t.checks, rec, head, ids, positions, n_layers)
        if t.family.key in VARIANT_BLOCKS:
            check_variant_blocks(t.checks, rec, t.model, t.family.key, positions)
            continue
        for layer in range(n_layers):
            ref = block_ref(t.model, t.family.key, layer)
            cos_sin = rotary_tables(t.model, t.family.key, layer, positions) if ref.rotary else None
            check_block(t.checks, rec, layer, ref, cos_sin, positions)


# final norms that multiply by (1 + w) in families family_refs.head_ref does not know
NORM_OFFSET = {"qwen3_next": 1.0}


def _head(t: Traced):
    """The head reference (embedding, final norm, unembedding) of the traced family."""
    generic = t.adapter.generic_fallback
    head = head_ref(t.model, "generic" if generic else t.family.key)
    offset = NORM_OFFSET.get(t.family.key)
    if offset is not None:
        from stepscope.tracer.adapters.generic import find_final_norm, find_layers

        head = dataclasses.replace(head, final_norm=rms(find_final_norm(find_layers(t.model)[0]), offset))
    return head


def check_generic_recomputation(t: Traced) -> None:
    """The generic fallback's names (embedding, block chaining, final norm, logits), full forward and prefill."""
    head = _head(t)
    n_layers = len(t.adapter.layers())
    for rec, ids in ((t.full, t.full_ids), (t.steps[0], t.full_ids[: t.trace.prompt_len])):
        check_generic(t.checks, rec, head, ids, n_layers)


def _sink_free(rec: dict) -> dict:
    """The tensors without the attention-sink column of scores and patterns (the sink has no key position)."""
    return {n: v[..., :-1] if n.endswith(("hook_attn_scores", "hook_pattern")) else v for n, v in rec.items()}


def check_steps(t: Traced) -> None:
    """Every step's tensors equal the matching rows of the full forward; its logit lens is recomputed."""
    head = _head(t)
    n_layers = len(t.adapter.layers())
    sink = bool(t.trace.model.get("attention_sink"))
    for entry, step in zip(t.trace.steps, t.steps):
        start, end = entry.positions
        if sink:  # the sink column: the same logit and the same absorbed mass as the full forward's rows
            for name in (n for n in step if n.endswith(("hook_attn_scores", "hook_pattern"))):
                t.checks.close("sink column = full forward rows", name, step[name][..., -1], t.full[name][:, start:end, -1], "step_vs_full")
            step, full = _sink_free(step), _sink_free(t.full)
        else:
            full = t.full
        if any(n.endswith("hook_state") for n in step):  # recurrent states exist only while generating (a cache)
            check_linear_states(t.checks, step, t.model, t.full, end)
            step = {n: v for n, v in step.items() if not n.endswith("hook_state")}
        check_step_matches_full(t.checks, step, full, start, end)
        check_logit_lens(t.checks, step, head, n_layers)


def check_generic_attention(t: Traced) -> None:
    """The generic fallback's attention against the model's own eager attention weights
    (`output_attentions`, transformers' code, not stepscope's), then pattern = softmax(scores),
    rows sum to 1 with the sink, z = pattern·v; for every block that has attention."""
    model = t.model
    previous = model.config._attn_implementation
    model.set_attn_implementation("eager")
    try:
        with torch.no_grad():
            out = model(t.full_ids[None], use_cache=False, output_attentions=True)
    finally:
        model.set_attn_implementation(previous)
    own = [a[0].to(torch.float64) for a in out.attentions if a is not None]  # per attention block [H, N, N]
    layers = [i for i in range(len(t.adapter.layers())) if f"blocks.{i}.attn.hook_pattern" in t.full]
    skipped = t.trace.model.get("layers_without_attention") or []
    t.checks.true("attention recorded on every block that has it", f"{layers} + {skipped}", sorted(layers + skipped) == list(range(len(t.adapter.layers()))))
    t.checks.true("one eager map per recorded block", f"{len(own)} vs {len(layers)}", len(own) == len(layers))
    sink = bool(t.trace.model.get("attention_sink"))
    for i, want in zip(layers, own):
        p = f"blocks.{i}.attn."
        scores, pattern = t.full[p + "hook_attn_scores"], t.full[p + "hook_pattern"]  # [H, N, N (+1)]
        keys = pattern[..., :-1] if sink else pattern
        t.checks.close("pattern = model's eager attention", p + "hook_pattern", keys, want)
        t.checks.close("pattern = softmax(scores)", p + "hook_pattern", pattern, torch.softmax(scores, -1))
        t.checks.close("pattern rows sum to 1", p + "hook_pattern", pattern.sum(-1), torch.ones(pattern.shape[:2], dtype=torch.float64))
        v = t.full[p + "hook_v"]  # [N, n_kv, d_v]
        z = torch.einsum("hts,shd->thd", keys, v.repeat_interleave(keys.shape[0] // v.shape[1], dim=1))  # [N, H, d_v]
        t.checks.close("z = pattern·v", p + "hook_z", t.full[p + "hook_z"], z)


def check_greedy(t: Traced) -> None:
    t.checks.true("greedy traced tokens == model.generate", f"{t.generated} vs {t.expected}", t.generated == t.expected)


def verify(family: Family, dtype: torch.dtype = torch.float32, out: str | None = None) -> Traced:
    """Trace (into `out`, else a new temporary directory) and run every check; raises CheckFailed on the first failure."""
    t = trace_family(family, dtype, out=out)
    if t.adapter.generic_fallback:
        check_generic_recomputation(t)
        if t.adapter.attention_names:
            check_generic_attention(t)
    else:
        check_recomputation(t)
    check_steps(t)
    check_greedy(t)
    return t
