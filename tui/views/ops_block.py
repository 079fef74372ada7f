"""The producing operation of each name inside a block, per family (see `tui.views.ops`).

Written from the family's facts and layout: parallel attention + MLP (NeoX: no resid_mid), post
norms feeding the residual (Gemma), per-head q/k norms (Qwen3, Gemma 3), fused projections
(Phi-3 qkv_proj / gate_up_proj, NeoX per-head q|k|v, GPT-2 Conv1D c_attn), biases, partial
rotary, sliding windows, soft-capped scores, mixture-of-experts routers. The generic fallback
knows only the block's input and output.
"""

from __future__ import annotations

from stepscope.tracer.model_info import renormalises_top_k
from stepscope.tracer.names import block_name
from stepscope.tui.views.op_facts import Facts, dims


def _proj(f: Facts, which: str, heads: int) -> str:
    """ln1 × the projection that yields q, k or v, in the family's layout."""
    d, H, Hk, dh = f.d, f.H, f.Hk, f.dh
    lay = f.layout
    if lay.qkv == "conv1d":
        return f"ln1 {f.td()} × W_QKV {dims(d, 3 * d)} + b_QKV (Conv1D c_attn), {which} third"
    if lay.qkv == "fused_heads":
        return f"ln1 {f.td()} × W_QKV {dims(d, 3 * H * dh)} + b_QKV (query_key_value), {which} of each head's [q|k|v]"
    if lay.qkv == "fused":
        return f"ln1 {f.td()} × W_QKV {dims(d, (H + 2 * Hk) * dh)} (fused qkv_proj), {which} part"
    bias = f" + b_{which.upper()}" if lay.qkv_bias else ""
    return f"ln1 {f.td()} × W_{which.upper()} {dims(d, heads * dh)}{bias}"


def _rope(f: Facts, src: str, heads: int) -> str:
    partial = ""
    if f.rotary_dim and int(f.rotary_dim) < f.dh:
        partial = f" on the first {f.rotary_dim} of {f.dh} features per head (rest unrotated)"
    return f"RoPE({src} {dims(f.T, heads, f.dh)}, {f.positions()}){partial}"


def _keys(f: Facts, layer: int, what: str, heads: int, transposed: bool = False) -> str:
    """`rot_k cache [S, Hk, dh]` (v: its head size dv), with the window's positions on a sliding layer's decode step."""
    first, S = f.keys(layer)
    where = f" (positions {first}..{f.end - 1})" if first else ""
    return f"{what} cache {dims(S, heads, f.dv if what == 'v' else f.dh)}{'ᵀ' if transposed else ''}{where}"


def _scores(f: Facts, layer: int, out: str, group: str) -> str:
    q_in = "q_normed" if f.has(layer, "attn.hook_q_normed") else "q"
    k_in = "k_normed" if f.has(layer, "attn.hook_k_normed") else "k"
    q_att, k_att = ("rot_q", "rot_k") if f.rotary else (q_in, k_in)
    scalar = f.model.get("query_pre_attn_scalar")
    scale = f"/ √{scalar} (query_pre_attn_scalar)" if scalar else f"/ √{f.dh}"
    raw = f"{q_att} {dims(f.T, f.H, f.dh)} · {_keys(f, layer, k_att, f.Hk, transposed=True)} {scale}"
    cap = f.model.get("attn_logit_softcapping")
    if cap:
        raw = f"{cap:g}·tanh({raw} / {cap:g})"
    window = f.window(layer)
    mask = f"sliding-window causal mask (window {window})" if window else "causal mask"
    sink = " ‖ the sink's logit (last column)" if f.model.get("attention_sink") else ""
    return f"{raw} + {mask}{sink} → {out}{group}"


def _attention(f: Facts, layer: int, rest: str, out: str) -> str | None:
    H, Hk, dh, T = f.H, f.Hk, f.dh, f.T
    group = f" ({H // max(1, Hk)} query heads per KV head)" if Hk and Hk < H else ""
    if rest in ("attn.hook_q", "attn.hook_k", "attn.hook_v"):
        which = rest[-1]
        return f"{_proj(f, which, H if which == 'q' else Hk)} → {out}"
    if rest in ("attn.hook_q_normed", "attn.hook_k_normed"):
        src, heads = ("q", H) if rest.endswith("q_normed") else ("k", Hk)
        return f"{f.norm} per head({src} {dims(T, heads, dh)}){f.norm_weight} → {out}"
    if rest in ("attn.hook_rot_q", "attn.hook_rot_k"):
        q = "q_normed" if f.has(layer, "attn.hook_q_normed") else "q"
        k = "k_normed" if f.has(layer, "attn.hook_k_normed") else "k"
        src, heads = (q, H) if rest.endswith("rot_q") else (k, Hk)
        return f"{_rope(f, src, heads)} → {out}"
    if rest == "attn.hook_attn_scores":
        return _scores(f, layer, out, group)
    _, S = f.keys(layer)
    sink = 1 if f.model.get("attention_sink") else 0  # the maps' last column is the sink (manifest fact)
    if rest == "attn.hook_pattern":
        return f"softmax(scores {dims(H, T, S + sink)}) → {out}" + (" (last column: mass on the sink)" if sink else "")
    if rest == "attn.hook_z":
        keys = f"pattern[..., :{S}] {dims(H, T, S)}" if sink else f"pattern {dims(H, T, S)}"
        return f"{keys} · {_keys(f, layer, 'v', Hk)} → {out}{group}"
    if rest == "hook_attn_out":
        bias = " + b_O" if f.layout.out_bias else ""
        dv = f.dv
        z = f"(z {dims(T, H, dv)} ⊙ σ(gate))" if f.has(layer, "attn.hook_gate") else f"z {dims(T, H, dv)}"  # gated attention
        return f"{z} × W_O {dims(H * dv, f.d)}{bias} → {out}"
    return None


def _mlp(f: Facts, layer: int, rest: str, out: str) -> str | None:
    T, d, m, td = f.T, f.d, f.m, f.td()
    mlp_in = "ln2"
    if rest == "mlp.hook_router_probs":
        return f"softmax({mlp_in} {td} × W_router {dims(d, f.E)}) → {out}"
    if rest == "mlp.hook_expert_ids":
        return f"top-{f.top_k or 'k'}(router_probs {dims(T, f.E)}) → {out}"
    if rest in ("mlp.hook_pre", "mlp.hook_pre_linear") and f.layout.mlp_fused:
        half = "first (gate)" if rest == "mlp.hook_pre" else "second (up)"
        return f"{mlp_in} {td} × W_gate_up {dims(d, 2 * m)} (fused gate_up_proj), {half} half → {out}"
    if rest == "mlp.hook_pre":
        if f.gated:
            return f"{mlp_in} {td} × W_gate {dims(d, m)} → {out}"
        conv = " (Conv1D c_fc)" if f.layout.conv1d else ""
        return f"{mlp_in} {td} × W_in {dims(d, m)} + b_in{conv} → {out}"
    if rest == "mlp.hook_pre_linear":
        return f"{mlp_in} {td} × W_up {dims(d, m)} → {out}"
    if rest == "mlp.hook_post":
        if f.gated:
            return f"{f.act}(mlp_pre {dims(T, m)}) ⊙ mlp_pre_linear {dims(T, m)} → {out}"
        return f"{f.act}(mlp_pre {dims(T, m)}) → {out}"
    if rest == "hook_mlp_out":
        if f.moe(layer):
            w = "top-k router probs renormalised" if renormalises_top_k(f.model) else "top-k router probs"
            return (f"Σ over the top-{f.top_k or 'k'} of {f.E} experts w_e · expert_e({mlp_in} {td}) "
                    f"(w = {w}; expert = down(act(gate)·up)) → {out}")
        if f.gated:
            return f"mlp_post {dims(T, m)} × W_down {dims(m, d)} → {out}"
        return f"mlp_post {dims(T, m)} × W_out {dims(m, d)} + b_out → {out}"
    return None


def norm_parts(f: Facts, prefix: str, x: str, suffix: str, out: str, note: str = "") -> str | None:
    """TransformerLens's norm names: hook_scale, hook_normalized (before the weight), hook_out."""
    td, centred = f.td(), f.norm == "LayerNorm"
    if suffix == "hook_scale":
        inner = f"({x} − mean)" if centred else x
        return f"√(mean({inner} {td}²) + eps) → {out}"
    if suffix == "hook_normalized":
        inner = f"({x} {td} − mean)" if centred else f"{x} {td}"
        return f"{inner} / {prefix}_scale {dims(f.T, 1)} → {out}"
    if suffix == "hook_out":
        weight = f.norm_weight or (" · w + b" if centred else " · w")
        return f"{f.norm}: {prefix}_normalized {td}{weight}{note} → {out}"
    return None


def _norm_op(f: Facts, layer: int, rest: str, out: str) -> str | None:
    prefix, _, suffix = rest.partition(".")
    if prefix == "ln1":
        return norm_parts(f, prefix, "resid_pre", suffix, out)
    if prefix == "ln1_post":
        return norm_parts(f, prefix, "attn_out", suffix, out, " (post-attention norm, added to the residual)")
    if prefix == "ln2" and f.parallel:
        return norm_parts(f, prefix, "resid_pre", suffix, out, " (parallel: the MLP reads the block input)")
    if prefix == "ln2":
        return norm_parts(f, prefix, "resid_mid", suffix, out)
    if prefix == "ln2_post":
        return norm_parts(f, prefix, "mlp_out", suffix, out, " (post-MLP norm, added to the residual)")
    return None


def _residual(f: Facts, layer: int, rest: str, out: str) -> str | None:
    td = f.td()
    if rest == "hook_resid_pre":
        if layer > 0:
            return f"blocks.{layer - 1}.resid_post {td} → {out}"
        if f.model.get("positional") == "absolute":
            return f"embed {td} + pos_embed {td} → {out}"
        return f"embed {td} → {out}"
    if f.generic and rest == "hook_resid_post":
        return f"block {layer}(resid_pre {td}) (generic fallback: internals not recorded) → {out}"
    norm = _norm_op(f, layer, rest, out)
    if norm is not None:
        return norm
    if rest == "hook_resid_mid":
        added = "ln1_post" if f.post_norms or f.has(layer, "ln1_post.hook_out") else "attn_out"
        return f"resid_pre {td} + {added} {td} → {out}"
    if rest == "hook_resid_post":
        if f.parallel:
            return f"resid_pre {td} + attn_out {td} + mlp_out {td} → {out}"
        added = "ln2_post" if f.post_norms or f.has(layer, "ln2_post.hook_out") else "mlp_out"
        return f"resid_mid {td} + {added} {td} → {out}"
    return None


def _linear_attention(f: Facts, layer: int, rest: str, out: str) -> str | None:
    """A linear-attention block (it records linear_attn.* and no attention map: Gated DeltaNet)."""
    if not f.has(layer, "linear_attn.hook_core_out"):
        return None
    core = dims(*f.step.shape(block_name(layer, "linear_attn.hook_core_out")))  # [T, n_v_heads, d_v]
    state = "recurrent state S [n_v_heads, d_k, d_v]"
    if rest == "linear_attn.hook_core_out":
        return f"gated delta rule over conv1d(ln1 {f.td()} × W_qkv), β, decay and the {state} → {out}"
    if rest == "linear_attn.hook_gate":
        return f"ln1 {f.td()} × W_z (output gate, before silu) → {out}"
    if rest == "linear_attn.hook_state":
        return f"{state} after this step (delta rule, one update per position) → {out}"
    if rest == "hook_attn_out":
        return f"(RMSNorm(core_out {core}) ⊙ silu(gate {core})) × W_out → {out} (linear attention: no attention map)"
    return None


def _latent_attention(f: Facts, layer: int, rest: str, out: str) -> str | None:
    """Multi-head latent attention (facts kv_lora_rank, q_lora_rank, qk_rope_head_dim: DeepSeek-V3)."""
    kr, qr, rope = (int(f.model.get(k) or 0) for k in ("kv_lora_rank", "q_lora_rank", "qk_rope_head_dim"))
    if not kr:
        return None
    T, H, dh, dv, nope = f.T, f.H, f.dh, f.dv, f.dh - rope
    q_src = f"q_latent {dims(T, qr)} × W_UQ {dims(qr, H * dh)}" if qr else f"ln1 {f.td()} × W_Q {dims(f.d, H * dh)}"
    if rest == "attn.hook_q_latent":
        return f"RMSNorm(ln1 {f.td()} × W_DQ {dims(f.d, qr)}) → {out}"
    if rest == "attn.hook_kv_latent":
        return f"RMSNorm((ln1 {f.td()} × W_DKV {dims(f.d, kr + rope)})[:{kr}]) (what the cache keeps) → {out}"
    if rest == "attn.hook_q":
        return f"{q_src} = [q_nope {nope} | q_pe {rope}] per head → {out}"
    if rest == "attn.hook_v":
        return f"kv_latent {dims(T, kr)} × W_UKV, the v part ({dv} per head) → {out}"
    if rest == "attn.hook_rot_q":
        return f"[q_nope | RoPE(q_pe, {f.positions()})] (RoPE on the last {rope} of {dh} features per head) → {out}"
    if rest == "attn.hook_rot_k":
        return (f"[k_nope (kv_latent × W_UKV) | RoPE(k_pe, {f.positions()})] (k_pe: (ln1 × W_DKV)[{kr}:], "
                f"one {rope}-feature key shared by the heads) → {out}")
    return None


def block_op(f: Facts, layer: int, rest: str, out: str) -> str:
    """One line: inputs and weights with shapes → `out` (the recorded name with its shape)."""
    for part in (_residual, _linear_attention, _latent_attention, _attention, _mlp):
        line = part(f, layer, rest, out)
        if line is not None:
            return line
    return f"block {layer} → {out}"
