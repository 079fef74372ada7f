"""Block equations of the families whose blocks vary the common shape (OLMo 2, SmolLM3, GLM-4,
gpt-oss, DeepSeek-V3, Qwen3-Next), recomputed from their weights.

Built on family_refs.py and family_checks.py (weights as float64 functions, `Checks`,
the causal/window mask, rotate-half RoPE); what differs is written out here: OLMo 2 has no norm
before its sublayers and normalises the whole q/k projection, SmolLM3 skips RoPE on its NoPE
layers, GLM-4 rotates interleaved feature pairs of a partial rotary slice, gpt-oss adds a sink
column to the scores and routes to clamped-SwiGLU experts with biases, DeepSeek-V3 attends through
compressed latents with a shared RoPE key and adds shared experts to sigmoid-routed ones, Qwen3-Next
mixes gated full attention with Gated DeltaNet blocks (recomputed token by token, state included). Each recorded tensor is
recomputed from the recorded input of its own stage, as in family_checks.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from types import SimpleNamespace

import torch

from .family_checks import Checks, D, _repeat_kv, allowed
from .family_refs import _w, act, linear, rms, rope, rotary_tables

Fn = Callable[[torch.Tensor], torch.Tensor]


def rope_interleaved(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x [T, n, d_head] rotated on feature pairs (0,1), (2,3), ... of its first rotary_dim features (GLM).

    cos, sin [T, rotary_dim] as the rotary embedding returns them (two halves of equal frequencies).
    """
    rd = cos.shape[-1]
    c = cos[:, None, : rd // 2].repeat_interleave(2, dim=-1)  # [T, 1, rd]
    s = sin[:, None, : rd // 2].repeat_interleave(2, dim=-1)
    rot, rest = x[..., :rd], x[..., rd:]
    pairs = torch.stack([-rot[..., 1::2], rot[..., 0::2]], dim=-1).flatten(-2)  # (-x1, x0) per pair
    return torch.cat([rot * c + pairs * s, rest], dim=-1)


def _identity_rotation(x, cos, sin):
    return x


@dataclass
class VariantBlockRef:
    n_heads: int
    n_kv: int
    d_head: int
    q: Fn  # attention input [T, d_model] -> [T, n_heads * d_head]
    k: Fn
    v: Fn
    o: Fn
    scaling: float
    rotate: Callable  # (x [T, n, d], cos, sin) -> rotated x
    ln1: Fn | None  # None: the attention reads resid_pre itself (OLMo 2)
    ln2: Fn | None
    ln1_post: Fn | None
    ln2_post: Fn | None
    qk_norm_whole: tuple[Fn, Fn] | None  # OLMo 2: RMSNorm over all heads of q, k
    gate: Fn | None
    up: Fn | None
    down: Fn | None
    act: Fn | None
    window: int | None = None  # sliding window of this layer
    sinks: torch.Tensor | None = None  # [n_heads] sink logits (gpt-oss)
    router: Fn | None = None  # MoE: x -> router logits [T, n_experts]
    experts: list | None = None  # MoE: expert e as a function x [T, d_model] -> [T, d_model]
    top_k: int = 0


def _norm(ck: Checks, rec: dict, name: str, fn: Fn, x: torch.Tensor) -> torch.Tensor:
    """Check a recorded norm of x (either vocabulary: `P.hook_out` = module output with TransformerLens's
    `P.hook_normalized` = x/scale, or the older `P.hook_normalized` = module output); returns its output."""
    prefix = name[: -len(".hook_normalized")]
    if prefix + ".hook_out" in rec:
        ck.close(f"{prefix.split('.')[-1]} = norm(x)", prefix + ".hook_out", rec[prefix + ".hook_out"], fn(x))
        scale = rec[prefix + ".hook_scale"]  # [T, 1]
        ck.close("normalized = x / scale", name, rec[name], x / scale)
        return rec[prefix + ".hook_out"]
    ck.close(f"{prefix.split('.')[-1]} = norm(x)", name, rec[name], fn(x))
    return rec[name]


def check_variant_block(ck: Checks, rec: dict, layer: int, ref: VariantBlockRef, cos_sin, positions: torch.Tensor) -> None:
    """One block of OLMo 2 / SmolLM3 / GLM-4 / gpt-oss: norms, q/k/v, q/k norms, RoPE, scores (+ sink), pattern, z, MLP or experts, residuals."""
    p = f"blocks.{layer}."
    t = len(positions)
    pre = rec[p + "hook_resid_pre"]
    x = pre if ref.ln1 is None else _norm(ck, rec, p + "ln1.hook_normalized", ref.ln1, pre)
    ck.close("qkv = x·W (+b)", p + "attn.hook_q", rec[p + "attn.hook_q"], ref.q(x).reshape(t, ref.n_heads, ref.d_head))
    ck.close("qkv = x·W (+b)", p + "attn.hook_k", rec[p + "attn.hook_k"], ref.k(x).reshape(t, ref.n_kv, ref.d_head))
    ck.close("qkv = x·W (+b)", p + "attn.hook_v", rec[p + "attn.hook_v"], ref.v(x).reshape(t, ref.n_kv, ref.d_head))
    q, k = rec[p + "attn.hook_q"], rec[p + "attn.hook_k"]
    if ref.qk_norm_whole is not None:
        qn, kn = ref.qk_norm_whole
        ck.close("q/k norm over all heads", p + "attn.hook_q_normed", rec[p + "attn.hook_q_normed"], qn(q.reshape(t, -1)).reshape(q.shape))
        ck.close("q/k norm over all heads", p + "attn.hook_k_normed", rec[p + "attn.hook_k_normed"], kn(k.reshape(t, -1)).reshape(k.shape))
        q, k = rec[p + "attn.hook_q_normed"], rec[p + "attn.hook_k_normed"]
    cos, sin = cos_sin
    ck.close("rot = RoPE(q/k)", p + "attn.hook_rot_q", rec[p + "attn.hook_rot_q"], ref.rotate(q, cos, sin))
    ck.close("rot = RoPE(q/k)", p + "attn.hook_rot_k", rec[p + "attn.hook_rot_k"], ref.rotate(k, cos, sin))
    q, k = rec[p + "attn.hook_rot_q"], rec[p + "attn.hook_rot_k"]
    scores = torch.einsum("thd,shd->hts", q, _repeat_kv(k, ref.n_heads)) * ref.scaling  # [H, T, S]
    ok = allowed(positions, positions, ref.window)  # [T, S]
    scores = scores.masked_fill(~ok, float("-inf"))
    if ref.sinks is not None:  # the sink logit of each head as one more (last) column
        scores = torch.cat([scores, ref.sinks[:, None, None].expand(-1, t, 1)], dim=-1)  # [H, T, S + 1]
    ck.close("scores = q·kᵀ·scale, masked", p + "attn.hook_attn_scores", rec[p + "attn.hook_attn_scores"], scores)
    pattern = rec[p + "attn.hook_pattern"]
    ck.close("pattern = softmax(scores)", p + "attn.hook_pattern", pattern, torch.softmax(rec[p + "attn.hook_attn_scores"], -1))
    keys = pattern[..., :-1] if ref.sinks is not None else pattern  # [H, T, S]
    ck.true("pattern 0 above diagonal / outside window", p, bool((keys[:, ~ok] == 0).all()))
    z = torch.einsum("hts,shd->thd", keys, _repeat_kv(rec[p + "attn.hook_v"], ref.n_heads))  # [T, H, d_head]
    ck.close("z = pattern·v", p + "attn.hook_z", rec[p + "attn.hook_z"], z)
    attn_out = rec[p + "hook_attn_out"]
    ck.close("attn_out = z·W_O (+b)", p + "hook_attn_out", attn_out, ref.o(rec[p + "attn.hook_z"].reshape(t, -1)))
    added = attn_out if ref.ln1_post is None else _norm(ck, rec, p + "ln1_post.hook_normalized", ref.ln1_post, attn_out)
    mid = rec[p + "hook_resid_mid"]
    ck.close("resid_mid = resid_pre + attn_out", p + "hook_resid_mid", mid, pre + added)
    x2 = mid if ref.ln2 is None else _norm(ck, rec, p + "ln2.hook_normalized", ref.ln2, mid)
    if ref.router is not None:
        _check_moe(ck, rec, p, ref, x2)
    else:
        _check_dense_mlp(ck, rec, p, ref, x2)
    mlp_out = rec[p + "hook_mlp_out"]
    added = mlp_out if ref.ln2_post is None else _norm(ck, rec, p + "ln2_post.hook_normalized", ref.ln2_post, mlp_out)
    ck.close("resid_post = resid_mid + mlp_out", p + "hook_resid_post", rec[p + "hook_resid_post"], mid + added)


def _check_moe(ck: Checks, rec: dict, p: str, ref: VariantBlockRef, x: torch.Tensor) -> None:
    """Router probabilities, the chosen experts and the weighted sum of their outputs (top-k renormalised)."""
    probs, ids = rec[p + "mlp.hook_router_probs"], rec[p + "mlp.hook_expert_ids"]  # [T, E], [T, k]
    ck.close("router_probs = softmax(ln2·W_router)", p, probs, torch.softmax(ref.router(x), -1))
    top = torch.topk(probs, ref.top_k, dim=-1)
    ck.true("expert_ids = top-k(router_probs)", p, torch.equal(ids.long(), top.indices))
    w = top.values / top.values.sum(-1, keepdim=True)  # [T, k]
    want = torch.stack([sum(w[i, j] * ref.experts[int(ids[i, j])](x[i : i + 1])[0] for j in range(ref.top_k)) for i in range(len(x))])
    ck.close("mlp_out = Σ w·expert(ln2)", p + "hook_mlp_out", rec[p + "hook_mlp_out"], want)


def _check_dense_mlp(ck: Checks, rec: dict, p: str, ref, x2: torch.Tensor) -> None:
    """gate, up, act(gate)·up and the down projection; `ref` has gate, up, down and act."""
    ck.close("mlp pre = x·W_gate", p + "mlp.hook_pre", rec[p + "mlp.hook_pre"], ref.gate(x2))
    ck.close("mlp pre_linear = x·W_up", p + "mlp.hook_pre_linear", rec[p + "mlp.hook_pre_linear"], ref.up(x2))
    post = ref.act(rec[p + "mlp.hook_pre"]) * rec[p + "mlp.hook_pre_linear"]
    ck.close("mlp post = act(pre) * pre_linear", p + "mlp.hook_post", rec[p + "mlp.hook_post"], post)
    ck.close("mlp_out = post·W_down", p + "hook_mlp_out", rec[p + "hook_mlp_out"], ref.down(rec[p + "mlp.hook_post"]))


def _common(model, layer) -> dict:
    c, a = model.config, layer.self_attn
    d_head = getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads
    return dict(
        n_heads=c.num_attention_heads,
        n_kv=c.num_key_value_heads,
        d_head=d_head,
        q=linear(a.q_proj.weight, a.q_proj.bias),
        k=linear(a.k_proj.weight, a.k_proj.bias),
        v=linear(a.v_proj.weight, a.v_proj.bias),
        o=linear(a.o_proj.weight, a.o_proj.bias),
        scaling=d_head**-0.5,
        act=act(c.hidden_act),
        ln1=None, ln2=None, ln1_post=None, ln2_post=None, qk_norm_whole=None,
    )


def _dense_mlp(layer) -> dict:
    m = layer.mlp
    return dict(gate=linear(m.gate_proj.weight), up=linear(m.up_proj.weight), down=linear(m.down_proj.weight))


def _olmo2(model, i) -> VariantBlockRef:
    layer = model.model.layers[i]
    a = layer.self_attn
    ref = _common(model, layer)
    ref.update(
        _dense_mlp(layer), rotate=rope, ln1_post=rms(layer.post_attention_layernorm), ln2_post=rms(layer.post_feedforward_layernorm),
        qk_norm_whole=(rms(a.q_norm), rms(a.k_norm)),
    )
    return VariantBlockRef(**ref)


def _smollm3(model, i) -> VariantBlockRef:
    layer = model.model.layers[i]
    ref = _common(model, layer)
    use_rope = bool(model.config.no_rope_layers[i])
    ref.update(_dense_mlp(layer), rotate=rope if use_rope else _identity_rotation,
               ln1=rms(layer.input_layernorm), ln2=rms(layer.post_attention_layernorm))
    return VariantBlockRef(**ref)


def _glm4(model, i) -> VariantBlockRef:
    layer = model.model.layers[i]
    ref = _common(model, layer)
    gu = _w(layer.mlp.gate_up_proj.weight)  # [2 d_mlp, d_model]: gate rows, then up rows
    d_mlp = gu.shape[0] // 2
    ref.update(
        gate=linear(gu[:d_mlp]), up=linear(gu[d_mlp:]), down=linear(layer.mlp.down_proj.weight), rotate=rope_interleaved,
        ln1=rms(layer.input_layernorm), ln1_post=rms(layer.post_self_attn_layernorm),
        ln2=rms(layer.post_attention_layernorm), ln2_post=rms(layer.post_mlp_layernorm),
    )
    return VariantBlockRef(**ref)


def _gpt_oss_expert(ex, e: int, alpha: float, limit: float) -> Fn:
    """Expert e of gpt-oss: interleaved gate/up columns, clamped, (up + 1)·gate·σ(alpha·gate), biases."""
    gu, gu_b = _w(ex.gate_up_proj)[e], _w(ex.gate_up_proj_bias)[e]  # [d_model, 2 d_mlp], [2 d_mlp]
    down, down_b = _w(ex.down_proj)[e], _w(ex.down_proj_bias)[e]  # [d_mlp, d_model], [d_model]

    def f(x):
        h = x @ gu + gu_b  # [T, 2 d_mlp]
        gate, up = h[..., ::2].clamp(max=limit), h[..., 1::2].clamp(-limit, limit)
        return ((up + 1) * gate * torch.sigmoid(gate * alpha)) @ down + down_b  # [T, d_model]

    return f


def _gpt_oss(model, i) -> VariantBlockRef:
    layer, c = model.model.layers[i], model.config
    ref = _common(model, layer)
    window = c.sliding_window if c.layer_types[i] == "sliding_attention" else None
    router, ex = layer.mlp.router, layer.mlp.experts
    ref.update(
        gate=None, up=None, down=None, act=None, rotate=rope, window=window, sinks=_w(layer.self_attn.sinks),
        ln1=rms(layer.input_layernorm), ln2=rms(layer.post_attention_layernorm),
        router=linear(router.weight, router.bias), top_k=c.num_experts_per_tok,
        experts=[_gpt_oss_expert(ex, e, c.swiglu_alpha, c.swiglu_limit) for e in range(c.num_local_experts)],
    )
    return VariantBlockRef(**ref)


def rope_deinterleaved(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """DeepSeek's interleaved RoPE on x [T, n, rd]: pairs (0,1), (2,3), ... turned, written out as
    [first of each pair | second of each pair] (the model's layout of the rotated part)."""
    c, s = cos[:, None, : cos.shape[-1] // 2], sin[:, None, : sin.shape[-1] // 2]  # [T, 1, rd/2]
    x1, x2 = x[..., 0::2], x[..., 1::2]
    return torch.cat([x1 * c - x2 * s, x2 * c + x1 * s], dim=-1)


def _swiglu(gate_w, up_w, down_w, act_fn) -> Fn:
    g, u, d = _w(gate_w), _w(up_w), _w(down_w)
    return lambda x: (act_fn(x @ g.T) * (x @ u.T)) @ d.T


def check_deepseek_block(ck: Checks, rec: dict, model, layer: int, cos_sin, positions: torch.Tensor) -> None:
    """One DeepSeek-V3 block from its weights: MLA latents, rope/nope split, scores, z (d_v), MoE or dense MLP."""
    c, blk = model.config, model.model.layers[layer]
    a, p, t = blk.self_attn, f"blocks.{layer}.", len(positions)
    h, nope, rd, dv, r = c.num_attention_heads, c.qk_nope_head_dim, c.qk_rope_head_dim, c.v_head_dim, c.kv_lora_rank
    pre = rec[p + "hook_resid_pre"]
    x = _norm(ck, rec, p + "ln1.hook_normalized", rms(blk.input_layernorm), pre)
    ck.close("q_latent = RMSNorm(ln1·W_DQ)", p + "attn.hook_q_latent", rec[p + "attn.hook_q_latent"], rms(a.q_a_layernorm)(linear(a.q_a_proj.weight)(x)))
    q = linear(a.q_b_proj.weight)(rec[p + "attn.hook_q_latent"]).reshape(t, h, nope + rd)  # [T, H, d_qk]
    ck.close("q = q_latent·W_UQ", p + "attn.hook_q", rec[p + "attn.hook_q"], q)
    compressed = linear(a.kv_a_proj_with_mqa.weight)(x)  # [T, r + rd]
    ck.close("kv_latent = RMSNorm(ln1·W_DKV)", p + "attn.hook_kv_latent", rec[p + "attn.hook_kv_latent"], rms(a.kv_a_layernorm)(compressed[:, :r]))
    kv = linear(a.kv_b_proj.weight)(rec[p + "attn.hook_kv_latent"]).reshape(t, h, nope + dv)  # [T, H, d_nope + d_v]
    ck.close("v = kv_latent·W_UV", p + "attn.hook_v", rec[p + "attn.hook_v"], kv[..., nope:])
    cos, sin = cos_sin
    turn = rope_deinterleaved if c.rope_interleave else rope
    q = rec[p + "attn.hook_q"]
    ck.close("rot_q = [q_nope | RoPE(q_pe)]", p + "attn.hook_rot_q", rec[p + "attn.hook_rot_q"], torch.cat([q[..., :nope], turn(q[..., nope:], cos, sin)], -1))
    k_pe = turn(compressed[:, None, r:], cos, sin).expand(t, h, rd)  # one RoPE key shared by the heads
    ck.close("rot_k = [k_nope | RoPE(k_pe)]", p + "attn.hook_rot_k", rec[p + "attn.hook_rot_k"], torch.cat([kv[..., :nope], k_pe], -1))
    scale = (nope + rd) ** -0.5
    ck.true("scaling = d_qk^-1/2 (default RoPE: no mscale)", p, abs(a.scaling - scale) < 1e-12)
    scores = torch.einsum("thd,shd->hts", rec[p + "attn.hook_rot_q"], rec[p + "attn.hook_rot_k"]) * scale  # [H, T, S]
    ok = allowed(positions, positions, None)
    ck.close("scores = q·kᵀ·scale, masked", p + "attn.hook_attn_scores", rec[p + "attn.hook_attn_scores"], scores.masked_fill(~ok, float("-inf")))
    pattern = rec[p + "attn.hook_pattern"]
    ck.close("pattern = softmax(scores)", p + "attn.hook_pattern", pattern, torch.softmax(rec[p + "attn.hook_attn_scores"], -1))
    z = torch.einsum("hts,shd->thd", pattern, rec[p + "attn.hook_v"])  # [T, H, d_v]
    ck.close("z = pattern·v", p + "attn.hook_z", rec[p + "attn.hook_z"], z)
    ck.close("attn_out = z·W_O (+b)", p + "hook_attn_out", rec[p + "hook_attn_out"], linear(a.o_proj.weight)(z.reshape(t, -1)))
    mid = rec[p + "hook_resid_mid"]
    ck.close("resid_mid = resid_pre + attn_out", p + "hook_resid_mid", mid, pre + rec[p + "hook_attn_out"])
    x2 = _norm(ck, rec, p + "ln2.hook_normalized", rms(blk.post_attention_layernorm), mid)
    m, act_fn = blk.mlp, act(c.hidden_act)
    if not hasattr(m, "experts"):
        _check_dense_mlp(ck, rec, p, SimpleNamespace(**_dense_mlp(blk), act=act_fn), x2)
    else:
        probs, ids = rec[p + "mlp.hook_router_probs"], rec[p + "mlp.hook_expert_ids"]  # [T, E] sigmoid, [T, k]
        ck.close("router_probs = σ(ln2·W_router)", p, probs, torch.sigmoid(linear(m.gate.weight)(x2)))
        choice = torch.topk(probs + _w(m.gate.e_score_correction_bias), c.num_experts_per_tok, dim=-1).indices  # n_group = 1
        ck.true("expert_ids = top-k(σ + bias)", p, torch.equal(ids.long(), choice.sort(-1).values))
        w = probs.gather(1, ids.long())
        w = w / (w.sum(-1, keepdim=True) + 1e-20) * c.routed_scaling_factor if c.norm_topk_prob else w * c.routed_scaling_factor
        gu, dn = _w(m.experts.gate_up_proj), _w(m.experts.down_proj)  # [E, 2 d_e, d], [E, d, d_e]

        def expert(e, xi):
            g, u = (xi @ gu[e].T).chunk(2, dim=-1)
            return (act_fn(g) * u) @ dn[e].T

        shared = _swiglu(m.shared_experts.gate_proj.weight, m.shared_experts.up_proj.weight, m.shared_experts.down_proj.weight, act_fn)
        ck.close("shared_out = shared experts(ln2)", p + "mlp.hook_shared_out", rec[p + "mlp.hook_shared_out"], shared(x2))
        routed = torch.stack([sum(w[i, j] * expert(int(ids[i, j]), x2[i : i + 1])[0] for j in range(ids.shape[1])) for i in range(t)])
        ck.close("mlp_out = Σ w·expert(ln2) + shared", p + "hook_mlp_out", rec[p + "hook_mlp_out"], routed + rec[p + "mlp.hook_shared_out"])
    ck.close("resid_post = resid_mid + mlp_out", p + "hook_resid_post", rec[p + "hook_resid_post"], mid + rec[p + "hook_mlp_out"])


def gated_delta_net(lin, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A Gated DeltaNet over x [T, d_model] from its weights, one token at a time (float64):
    (core_out [T, Hv, dv], output gate z [T, Hv, dv], the state after the last token [Hv, dk, dv]).
    Only the head layout of the fused projections is the model's own (fix_query_key_value_ordering)."""
    t = x.shape[0]
    q, k, v, z, b, a = lin.fix_query_key_value_ordering(linear(lin.in_proj_qkvz.weight)(x)[None], linear(lin.in_proj_ba.weight)(x)[None])
    mixed = torch.cat([q.reshape(1, t, -1), k.reshape(1, t, -1), v.reshape(1, t, -1)], -1).transpose(1, 2)  # [1, C, T]
    w = _w(lin.conv1d.weight)  # [C, 1, K]: depthwise, causal
    mixed = act(lin.activation)(torch.nn.functional.conv1d(mixed, w, padding=w.shape[-1] - 1, groups=w.shape[0])[..., :t])
    q, k, v = torch.split(mixed[0].T, [lin.key_dim, lin.key_dim, lin.value_dim], dim=-1)  # [T, ...]
    hv, dk, dv = lin.num_v_heads, lin.head_k_dim, lin.head_v_dim
    rep = hv // lin.num_k_heads
    q = q.reshape(t, -1, dk).repeat_interleave(rep, 1)  # [T, Hv, dk]
    k = k.reshape(t, -1, dk).repeat_interleave(rep, 1)
    v = v.reshape(t, hv, dv)
    q = q * torch.rsqrt((q * q).sum(-1, keepdim=True) + 1e-6) / dk**0.5
    k = k * torch.rsqrt((k * k).sum(-1, keepdim=True) + 1e-6)
    beta = torch.sigmoid(b[0])  # [T, Hv]
    decay = -_w(lin.A_log).exp() * torch.nn.functional.softplus(a[0] + _w(lin.dt_bias))  # [T, Hv] (log of the decay)
    state = torch.zeros(hv, dk, dv, dtype=D)
    out = []
    for i in range(t):
        state = state * decay[i].exp()[:, None, None]
        delta = (v[i] - (state * k[i][:, :, None]).sum(-2)) * beta[i][:, None]  # [Hv, dv]
        state = state + k[i][:, :, None] * delta[:, None, :]
        out.append((state * q[i][:, :, None]).sum(-2))  # [Hv, dv]
    return torch.stack(out), z[0], state


def _qwen3_next_moe(ck: Checks, rec: dict, p: str, m, c, x: torch.Tensor) -> None:
    """Softmax router, top-k (renormalised when norm_topk_prob), experts, plus the sigmoid-gated shared expert."""
    probs, ids = rec[p + "mlp.hook_router_probs"], rec[p + "mlp.hook_expert_ids"]
    ck.close("router_probs = softmax(ln2·W_router)", p, probs, torch.softmax(linear(m.gate.weight)(x), -1))
    top = torch.topk(probs, c.num_experts_per_tok, dim=-1)
    ck.true("expert_ids = top-k(router_probs)", p, torch.equal(ids.long(), top.indices))
    w = top.values / top.values.sum(-1, keepdim=True) if c.norm_topk_prob else top.values
    gu, dn, act_fn = _w(m.experts.gate_up_proj), _w(m.experts.down_proj), act(c.hidden_act)

    def expert(e, xi):
        g, u = (xi @ gu[e].T).chunk(2, dim=-1)
        return (act_fn(g) * u) @ dn[e].T

    sh = m.shared_expert
    shared = _swiglu(sh.gate_proj.weight, sh.up_proj.weight, sh.down_proj.weight, act_fn)(x) * torch.sigmoid(linear(m.shared_expert_gate.weight)(x))
    routed = torch.stack([sum(w[i, j] * expert(int(ids[i, j]), x[i : i + 1])[0] for j in range(ids.shape[1])) for i in range(len(x))])
    ck.close("mlp_out = Σ w·expert(ln2) + σ(gate)·shared", p + "hook_mlp_out", rec[p + "hook_mlp_out"], routed + shared)


def check_qwen3_next_block(ck: Checks, rec: dict, model, layer: int, cos_sin, positions: torch.Tensor) -> None:
    """One Qwen3-Next block: gated full attention (a pattern) or Gated DeltaNet (no pattern: its output and gate)."""
    c, blk = model.config, model.model.layers[layer]
    p, t = f"blocks.{layer}.", len(positions)
    pre = rec[p + "hook_resid_pre"]
    x = _norm(ck, rec, p + "ln1.hook_normalized", rms(blk.input_layernorm, 1.0), pre)
    if hasattr(blk, "linear_attn"):
        lin = blk.linear_attn
        core, gate, _ = gated_delta_net(lin, x)
        ck.true("no attention map on a linear-attention block", p, not any(n.startswith(p + "attn.") for n in rec))
        ck.close("core_out = gated delta rule", p + "linear_attn.hook_core_out", rec[p + "linear_attn.hook_core_out"], core)
        ck.close("gate = ln1·W_z", p + "linear_attn.hook_gate", rec[p + "linear_attn.hook_gate"], gate)
        normed = rms(lin.norm)(rec[p + "linear_attn.hook_core_out"]) * act(lin.activation)(rec[p + "linear_attn.hook_gate"])
        ck.close("attn_out = (RMSNorm(core_out)·silu(gate))·W_out", p + "hook_attn_out", rec[p + "hook_attn_out"], linear(lin.out_proj.weight)(normed.reshape(t, -1)))
    else:
        a = blk.self_attn
        h, n_kv, d = c.num_attention_heads, c.num_key_value_heads, c.head_dim
        qg = linear(a.q_proj.weight)(x).reshape(t, h, 2, d)
        ck.close("[q | gate] = ln1·W_Q", p + "attn.hook_q", rec[p + "attn.hook_q"], qg[:, :, 0])
        ck.close("[q | gate] = ln1·W_Q", p + "attn.hook_gate", rec[p + "attn.hook_gate"], qg[:, :, 1])
        ck.close("qkv = x·W (+b)", p + "attn.hook_k", rec[p + "attn.hook_k"], linear(a.k_proj.weight)(x).reshape(t, n_kv, d))
        ck.close("qkv = x·W (+b)", p + "attn.hook_v", rec[p + "attn.hook_v"], linear(a.v_proj.weight)(x).reshape(t, n_kv, d))
        ck.close("q/k per-head norm", p + "attn.hook_q_normed", rec[p + "attn.hook_q_normed"], rms(a.q_norm, 1.0)(rec[p + "attn.hook_q"]))
        ck.close("q/k per-head norm", p + "attn.hook_k_normed", rec[p + "attn.hook_k_normed"], rms(a.k_norm, 1.0)(rec[p + "attn.hook_k"]))
        cos, sin = cos_sin
        for r in ("q", "k"):
            ck.close("rot = RoPE(q/k)", p + f"attn.hook_rot_{r}", rec[p + f"attn.hook_rot_{r}"], rope(rec[p + f"attn.hook_{r}_normed"], cos, sin))
        scores = torch.einsum("thd,shd->hts", rec[p + "attn.hook_rot_q"], _repeat_kv(rec[p + "attn.hook_rot_k"], h)) * d**-0.5
        ok = allowed(positions, positions, None)
        ck.close("scores = q·kᵀ·scale, masked", p + "attn.hook_attn_scores", rec[p + "attn.hook_attn_scores"], scores.masked_fill(~ok, float("-inf")))
        pattern = rec[p + "attn.hook_pattern"]
        ck.close("pattern = softmax(scores)", p + "attn.hook_pattern", pattern, torch.softmax(rec[p + "attn.hook_attn_scores"], -1))
        z = torch.einsum("hts,shd->thd", pattern, _repeat_kv(rec[p + "attn.hook_v"], h))
        ck.close("z = pattern·v", p + "attn.hook_z", rec[p + "attn.hook_z"], z)
        gated = rec[p + "attn.hook_z"] * torch.sigmoid(rec[p + "attn.hook_gate"])  # [T, H, d]
        ck.close("attn_out = (z·σ(gate))·W_O", p + "hook_attn_out", rec[p + "hook_attn_out"], linear(a.o_proj.weight)(gated.reshape(t, -1)))
    mid = rec[p + "hook_resid_mid"]
    ck.close("resid_mid = resid_pre + attn_out", p + "hook_resid_mid", mid, pre + rec[p + "hook_attn_out"])
    x2 = _norm(ck, rec, p + "ln2.hook_normalized", rms(blk.post_attention_layernorm, 1.0), mid)
    _qwen3_next_moe(ck, rec, p, blk.mlp, c, x2)
    ck.close("resid_post = resid_mid + mlp_out", p + "hook_resid_post", rec[p + "hook_resid_post"], mid + rec[p + "hook_mlp_out"])


def check_linear_states(ck: Checks, step: dict, model, full: dict, end: int) -> None:
    """Each recorded recurrent state equals the Gated DeltaNet's state after positions [0, end),
    recomputed token by token from the weights over the block's ln1 output of the full forward."""
    for name in [n for n in step if n.endswith("linear_attn.hook_state")]:
        layer = int(name.split(".")[1])
        p = f"blocks.{layer}.ln1."
        x = full[p + "hook_out"] if p + "hook_out" in full else full[p + "hook_normalized"]  # [N, d_model]
        _, _, state = gated_delta_net(model.model.layers[layer].linear_attn, x[:end])
        ck.close("state = delta-rule state after the step", name, step[name], state, "step_vs_full")


# family -> its VariantBlockRef builder (None: the family has its own check function below)
VARIANT_BLOCKS = {"olmo2": _olmo2, "smollm3": _smollm3, "glm4": _glm4, "gpt_oss": _gpt_oss, "deepseek_v3": None, "qwen3_next": None}


def check_variant_blocks(ck: Checks, rec: dict, model, family: str, positions: torch.Tensor) -> None:
    """Every block of a new family over a prefill-like forward at `positions`."""
    for layer in range(model.config.num_hidden_layers):
        cos, sin = rotary_tables(model, family, layer, positions)
        if family == "gpt_oss":  # its rotary embedding returns one half: both halves turn by the same angle
            cos, sin = torch.cat([cos, cos], -1), torch.cat([sin, sin], -1)
        if family == "deepseek_v3":
            check_deepseek_block(ck, rec, model, layer, (cos, sin), positions)
        elif family == "qwen3_next":
            check_qwen3_next_block(ck, rec, model, layer, (cos, sin), positions)
        else:
            check_variant_block(ck, rec, layer, VARIANT_BLOCKS[family](model, layer), (cos, sin), positions)


__all__ = ["D", "VARIANT_BLOCKS", "check_variant_block", "check_variant_blocks", "rope_interleaved"]
