"""The operation that produced each recorded tensor, written with shapes from the model facts.

    operation(step, "blocks.0.attn.hook_q", model)
    -> "ln1 [5, 576] × W_Q [576, 576] → q [5, 9, 64]"

Shapes of inputs and weights come from the manifest model facts (d_model, n_heads, n_kv_heads,
d_head, d_mlp, vocab_size) and the step's positions (T new positions, S keys); the output shape is
the recorded one. Family flags (`gated_mlp`, `parallel_attn_mlp`, `positional`, `norm`, `act`)
pick the data flow.
"""

from __future__ import annotations

from tracer.names import block_name, split_block_name

_SHORT = {
    "hook_resid_pre": "resid_pre", "ln1.hook_normalized": "ln1", "attn.hook_q": "q", "attn.hook_k": "k",
    "attn.hook_v": "v", "attn.hook_q_normed": "q_normed", "attn.hook_k_normed": "k_normed",
    "attn.hook_rot_q": "rot_q", "attn.hook_rot_k": "rot_k", "attn.hook_attn_scores": "scores",
    "attn.hook_pattern": "pattern", "attn.hook_z": "z", "hook_attn_out": "attn_out",
    "ln1_post.hook_normalized": "ln1_post", "hook_resid_mid": "resid_mid", "ln2.hook_normalized": "ln2",
    "mlp.hook_router_probs": "router_probs", "mlp.hook_expert_ids": "expert_ids", "mlp.hook_pre": "mlp_pre",
    "mlp.hook_pre_linear": "mlp_pre_linear", "mlp.hook_post": "mlp_post", "hook_mlp_out": "mlp_out",
    "ln2_post.hook_normalized": "ln2_post", "hook_resid_post": "resid_post",
    "hook_embed": "embed", "hook_pos_embed": "pos_embed", "ln_final.hook_normalized": "ln_final",
    "logit_lens.ids": "lens_ids", "logit_lens.probs": "lens_probs",
}


def short_name(name: str) -> str:
    """`blocks.3.attn.hook_q` -> `q`; `sample.candidate_probs` -> `candidate_probs`."""
    parts = split_block_name(name)
    rest = parts[1] if parts else name
    if rest in _SHORT:
        return _SHORT[rest]
    rest = rest.removeprefix("sample.").replace(".hook_normalized", "").replace("hook_", "")
    return rest.removeprefix("attn.").removeprefix("mlp.")


def dims(*sizes) -> str:
    return "[" + ", ".join(str(s) for s in sizes) + "]"


class _Facts:
    """Model facts and step geometry used to write shapes."""

    def __init__(self, step, model: dict):
        start, end = step.positions
        self.step, self.model = step, model
        self.T, self.S = end - start, end
        self.d = int(model.get("d_model") or 0)
        self.H = int(model.get("n_heads") or 0)
        self.Hk = int(model.get("n_kv_heads") or self.H)
        self.dh = int(model.get("d_head") or (self.d // max(1, self.H)))
        self.m = int(model.get("d_mlp") or 0)
        self.V = int(model.get("vocab_size") or 0)
        self.L = int(model.get("n_layers") or 0)
        self.norm = "LayerNorm" if model.get("norm") == "layernorm" else "RMSNorm"
        self.act = model.get("act") or ("silu" if model.get("gated_mlp") else "gelu")
        self.gated = bool(model.get("gated_mlp"))
        self.parallel = bool(model.get("parallel_attn_mlp"))
        self.rotary = model.get("positional") == "rotary"

    def has(self, layer: int, rest: str) -> bool:
        """A family-specific tensor exists when this step recorded it."""
        return block_name(layer, rest) in self.step

    def positions(self) -> str:
        start, end = self.step.positions
        return f"position {start}" if end - start == 1 else f"positions {start}..{end - 1}"

    def td(self) -> str:
        return dims(self.T, self.d)


def _block_op(f: _Facts, layer: int, rest: str, out: str) -> str:
    T, d, H, Hk, dh, m, S = f.T, f.d, f.H, f.Hk, f.dh, f.m, f.S
    td = f.td()
    attn_in = "ln1"
    mlp_in = "ln2" if not f.parallel or f.has(layer, "ln2.hook_normalized") else "ln1"
    q_in = "q_normed" if f.has(layer, "attn.hook_q_normed") else "q"
    k_in = "k_normed" if f.has(layer, "attn.hook_k_normed") else "k"
    q_att, k_att = ("rot_q", "rot_k") if f.rotary else (q_in, k_in)
    group = f" ({H // max(1, Hk)} query heads per KV head)" if Hk and Hk < H else ""
    if rest == "hook_resid_pre":
        if layer > 0:
            return f"blocks.{layer - 1}.resid_post {td} → {out}"
        if f.model.get("positional") == "absolute":
            return f"embed {td} + pos_embed {td} → {out}"
        return f"embed {td} → {out}"
    if rest == "ln1.hook_normalized":
        return f"{f.norm}(resid_pre {td}) → {out}"
    if rest in ("attn.hook_q", "attn.hook_k", "attn.hook_v"):
        w, heads = {"attn.hook_q": ("W_Q", H), "attn.hook_k": ("W_K", Hk), "attn.hook_v": ("W_V", Hk)}[rest]
        return f"{attn_in} {td} × {w} {dims(d, heads * dh)} → {out}"
    if rest in ("attn.hook_q_normed", "attn.hook_k_normed"):
        src, heads = ("q", H) if rest.endswith("q_normed") else ("k", Hk)
        return f"{f.norm} per head({src} {dims(T, heads, dh)}) → {out}"
    if rest in ("attn.hook_rot_q", "attn.hook_rot_k"):
        src, heads = (q_in, H) if rest.endswith("rot_q") else (k_in, Hk)
        return f"RoPE({src} {dims(T, heads, dh)}, {f.positions()}) → {out}"
    if rest == "attn.hook_attn_scores":
        keys = f"{k_att} cache {dims(S, Hk, dh)}ᵀ"
        return f"{q_att} {dims(T, H, dh)} · {keys} / √{dh} + causal mask → {out}{group}"
    if rest == "attn.hook_pattern":
        return f"softmax(scores {dims(H, T, S)}) → {out}"
    if rest == "attn.hook_z":
        return f"pattern {dims(H, T, S)} · v cache {dims(S, Hk, dh)} → {out}{group}"
    if rest == "hook_attn_out":
        return f"z {dims(T, H, dh)} × W_O {dims(H * dh, d)} → {out}"
    if rest == "ln1_post.hook_normalized":
        return f"{f.norm}(attn_out {td}) → {out}"
    if rest == "hook_resid_mid":
        added = "ln1_post" if f.has(layer, "ln1_post.hook_normalized") else "attn_out"
        return f"resid_pre {td} + {added} {td} → {out}"
    if rest == "ln2.hook_normalized":
        src = "resid_pre" if f.parallel else "resid_mid"
        return f"{f.norm}({src} {td}) → {out}"
    if rest == "mlp.hook_router_probs":
        e = int(f.model.get("n_experts") or 0)
        return f"softmax({mlp_in} {td} × W_router {dims(d, e)}) → {out}"
    if rest == "mlp.hook_expert_ids":
        e = int(f.model.get("n_experts") or 0)
        return f"top-k(router_probs {dims(T, e)}) → {out}"
    if rest == "mlp.hook_pre":
        if f.gated:
            return f"{mlp_in} {td} × W_gate {dims(d, m)} → {out}"
        return f"{mlp_in} {td} × W_in {dims(d, m)} + b_in → {out}"
    if rest == "mlp.hook_pre_linear":
        return f"{mlp_in} {td} × W_up {dims(d, m)} → {out}"
    if rest == "mlp.hook_post":
        if f.gated:
            return f"{f.act}(mlp_pre {dims(T, m)}) ⊙ mlp_pre_linear {dims(T, m)} → {out}"
        return f"{f.act}(mlp_pre {dims(T, m)}) → {out}"
    if rest == "hook_mlp_out":
        return f"mlp_post {dims(T, m)} × {'W_down' if f.gated else 'W_out'} {dims(m, d)} → {out}"
    if rest == "ln2_post.hook_normalized":
        return f"{f.norm}(mlp_out {td}) → {out}"
    if rest == "hook_resid_post":
        if f.parallel:
            return f"resid_pre {td} + attn_out {td} + mlp_out {td} → {out}"
        added = "ln2_post" if f.has(layer, "ln2_post.hook_normalized") else "mlp_out"
        return f"resid_mid {td} + {added} {td} → {out}"
    return f"block {layer} → {out}"


def _sampling_settings(sampling: dict) -> tuple[str, str]:
    t = sampling.get("temperature", 1.0)
    k = sampling.get("top_k") or 0
    p = sampling.get("top_p", 1.0)
    mp = sampling.get("min_p", 0.0)
    return f"T={t:g}, top-k={k or 'off'}", f"top-p={p:g}, min-p={mp:g}"


def _tail_op(f: _Facts, name: str, out: str) -> str:
    td = f.td()
    sampling = getattr(f.step, "sampling", None) or {}
    temp, nucleus = _sampling_settings(sampling)
    if name == "hook_embed":
        return f"W_E {dims(f.V, f.d)}[ids {dims(f.T)}] → {out}"
    if name == "hook_pos_embed":
        return f"W_pos {dims(f.model.get('n_ctx', '?'), f.d)}[{f.positions()}] → {out}"
    if name == "ln_final.hook_normalized":
        return f"{f.norm}(blocks.{f.L - 1}.resid_post {td}) → {out}"
    if name == "logits":
        return f"ln_final {td} × W_U {dims(f.d, f.V)} → {out}"
    if name.startswith("logit_lens."):
        return f"top-k softmax(ln_final(resid_post[-1]) × W_U {dims(f.d, f.V)}) per layer → {out}"
    last = f"logits[-1] {dims(f.V)}"
    ops = {
        "sample.candidate_ids": f"sort by softmax({last} / T), {temp} → {out}",
        "sample.candidate_logits": f"{last} at candidate_ids → {out}",
        "sample.candidate_raw_probs": f"softmax({last}) at candidate_ids → {out}",
        "sample.candidate_temp_probs": f"softmax({last} / T) after top-k ({temp}) → {out}",
        "sample.candidate_cumulative": f"cumsum(candidate_temp_probs) → {out}",
    }
    if name == "sample.candidate_probs":
        chosen = sampling.get("chosen_id")
        pick = "argmax" if sampling.get("greedy") else "sample"
        return f"candidate_temp_probs after {nucleus}, renormalised → {out}; {pick} → id {chosen}"
    return ops.get(name, f"→ {out}")


def operation(step, name: str, model: dict) -> str:
    """One line: the inputs and weights with shapes → the recorded tensor with its shape."""
    out = f"{short_name(name)} {dims(*step.shape(name))}"
    parts = split_block_name(name)
    facts = _Facts(step, model)
    if parts is not None:
        return _block_op(facts, parts[0], parts[1], out)
    return _tail_op(facts, name, out)
