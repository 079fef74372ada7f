"""The operation that produced each recorded tensor, written with shapes from the model facts.

    operation(step, "blocks.0.attn.hook_q", model)
    -> "ln1 [5, 576] × W_Q [576, 576] → q [5, 9, 64]"

Shapes of inputs and weights come from the manifest model facts (d_model, n_heads, n_kv_heads,
d_head, d_mlp, vocab_size) and the step's positions (T new positions, S keys per layer: only the
window on a sliding layer); the output shape is the recorded one. The family and its facts
(`gated_mlp`, `parallel_attn_mlp`, `positional`, `norm`, `act`, post norms, soft-caps, experts)
pick the data flow: block names in `tui.views.ops_block`, the rest here.
"""

from __future__ import annotations

from stepscope.tracer.names import split_block_name
from stepscope.tui.views.op_facts import Facts, dims
from stepscope.tui.views.ops_block import block_op, norm_parts

_SHORT = {
    "hook_resid_pre": "resid_pre", "ln1.hook_out": "ln1", "attn.hook_q": "q", "attn.hook_k": "k",
    "attn.hook_v": "v", "attn.hook_q_normed": "q_normed", "attn.hook_k_normed": "k_normed",
    "attn.hook_rot_q": "rot_q", "attn.hook_rot_k": "rot_k", "attn.hook_attn_scores": "scores",
    "attn.hook_pattern": "pattern", "attn.hook_z": "z", "hook_attn_out": "attn_out",
    "ln1_post.hook_out": "ln1_post", "hook_resid_mid": "resid_mid", "ln2.hook_out": "ln2",
    "mlp.hook_router_probs": "router_probs", "mlp.hook_expert_ids": "expert_ids", "mlp.hook_pre": "mlp_pre",
    "mlp.hook_pre_linear": "mlp_pre_linear", "mlp.hook_post": "mlp_post", "hook_mlp_out": "mlp_out",
    "ln2_post.hook_out": "ln2_post", "hook_resid_post": "resid_post",
    "hook_embed": "embed", "hook_pos_embed": "pos_embed", "ln_final.hook_out": "ln_final",
    "logit_lens.ids": "lens_ids", "logit_lens.probs": "lens_probs",
}


def short_name(name: str) -> str:
    """`blocks.3.attn.hook_q` -> `q`; `sample.candidate_probs` -> `candidate_probs`."""
    parts = split_block_name(name)
    rest = parts[1] if parts else name
    if rest in _SHORT:
        return _SHORT[rest]
    for suffix, short in ((".hook_normalized", "_normalized"), (".hook_scale", "_scale"), (".hook_out", "")):
        rest = rest.replace(suffix, short)  # norms: ln1_normalized, ln1_scale, ln1 (its output)
    rest = rest.removeprefix("sample.").replace("hook_", "")
    return rest.removeprefix("attn.").removeprefix("mlp.")


def _sampling_settings(sampling: dict) -> tuple[str, str]:
    t = sampling.get("temperature", 1.0)
    k = sampling.get("top_k") or 0
    p = sampling.get("top_p", 1.0)
    mp = sampling.get("min_p", 0.0)
    return f"T={t:g}, top-k={k or 'off'}", f"top-p={p:g}, min-p={mp:g}"


def _softcapped(f: Facts, logits: str) -> str:
    """Gemma's final soft-cap around an expression, when the model has one."""
    cap = f.model.get("final_logit_softcapping")
    return f"{cap:g}·tanh({logits} / {cap:g})" if cap else logits


def _head_op(f: Facts, name: str, out: str) -> str | None:
    """Embeddings, final norm, logits and logit lens."""
    td = f.td()
    if name == "hook_embed":
        scale = f.model.get("embed_scale")
        scaled = f" × √d_model ({scale:.4g})" if scale else ""
        return f"W_E {dims(f.V, f.d)}[ids {dims(f.T)}]{scaled} → {out}"
    if name == "hook_pos_embed":
        return f"W_pos {dims(f.model.get('n_ctx', '?'), f.d)}[{f.positions()}] → {out}"
    if name.startswith("ln_final.") and not f.generic:
        return norm_parts(f, "ln_final", f"blocks.{f.L - 1}.resid_post", name.split(".", 1)[1], out)
    if name.startswith("ln_final."):
        return f"final norm(blocks.{f.L - 1}.resid_post {td}) → {out}"
    if name == "logits":
        if f.generic:
            return f"the model's output (LM head of the last hidden state) {dims(f.d, f.V)} → {out}"
        return f"{_softcapped(f, f'ln_final {td} × W_U {dims(f.d, f.V)}')} → {out}"
    if name.startswith("logit_lens.") and f.generic:
        return f"top-k softmax(LM head(final norm(resid_post[-1]))) per layer → {out}"
    if name.startswith("logit_lens."):
        lens = _softcapped(f, f"ln_final(resid_post[-1]) × W_U {dims(f.d, f.V)}")
        return f"top-k softmax({lens}) per layer → {out}"
    return None


def _tail_op(f: Facts, name: str, out: str) -> str:
    head = _head_op(f, name, out)
    if head is not None:
        return head
    sampling = getattr(f.step, "sampling", None) or {}
    temp, nucleus = _sampling_settings(sampling)
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
    facts = Facts(step, model)
    if parts is not None:
        return block_op(facts, parts[0], parts[1], out)
    return _tail_op(facts, name, out)
