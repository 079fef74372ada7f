"""Recomputation checks shared by tests/tracer/test_families.py and scripts/supported_models.py.

Every recorded tensor is compared with an independent recomputation (family_refs.py) from
the recorded *inputs* of its own stage, so an error shows where it arises instead of piling up.
Tolerances per dtype are documented in docs/FIDELITY.md (`TOLERANCE` here is the source).

A check function raises `CheckFailed` with the name and the error; `Checks` counts what passed.
"""

from __future__ import annotations

import torch

from .family_refs import BlockRef, HeadRef, rope

D = torch.float64

# max |got - want| / max(max |want|, 1): relative to the tensor's scale (see docs/FIDELITY.md)
TOLERANCE = {
    torch.float32: {"recompute": 1e-5, "step_vs_full": 1e-5},
    torch.bfloat16: {"recompute": 2e-2, "step_vs_full": 2e-2},
    torch.float16: {"recompute": 5e-3, "step_vs_full": 5e-3},
}


class CheckFailed(AssertionError):
    pass


class Checks:
    """Counts passed checks by kind; `close`/`true` raise CheckFailed on the first failure."""

    def __init__(self, dtype: torch.dtype):
        self.tol = TOLERANCE[dtype]
        self.passed: dict[str, int] = {}
        self.worst = dict.fromkeys(self.tol, 0.0)  # largest relative error seen, per tolerance kind

    def _ok(self, kind: str) -> None:
        self.passed[kind] = self.passed.get(kind, 0) + 1

    def close(self, kind: str, what: str, got: torch.Tensor, want: torch.Tensor, tol: str = "recompute") -> None:
        got, want = got.to(D), want.to(D)
        if got.shape != want.shape:
            raise CheckFailed(f"{kind}: {what}: shape {tuple(got.shape)} != {tuple(want.shape)}")
        inf_got, inf_want = torch.isneginf(got), torch.isneginf(want)
        if not torch.equal(inf_got, inf_want):
            raise CheckFailed(f"{kind}: {what}: -inf (masked) positions differ")
        fin = ~inf_want
        if not fin.any():
            self._ok(kind)
            return
        err = (got[fin] - want[fin]).abs().max().item() / max(want[fin].abs().max().item(), 1.0)
        self.worst[tol] = max(self.worst[tol], err)
        if not err <= self.tol[tol]:
            raise CheckFailed(f"{kind}: {what}: relative error {err:.3g} > {self.tol[tol]:g}")
        self._ok(kind)

    def true(self, kind: str, what: str, ok: bool) -> None:
        if not ok:
            raise CheckFailed(f"{kind}: {what}")
        self._ok(kind)


def _repeat_kv(x: torch.Tensor, n_heads: int) -> torch.Tensor:
    """[T, n_kv, d] -> [T, n_heads, d] (each KV head serves n_heads / n_kv query heads)."""
    return x.repeat_interleave(n_heads // x.shape[1], dim=1)


def allowed(positions: torch.Tensor, keys: torch.Tensor, window: int | None) -> torch.Tensor:
    """[T, S] bool: query at positions[i] may attend key at keys[j] (causal, inside the window)."""
    ok = keys[None, :] <= positions[:, None]
    if window is not None:
        ok &= keys[None, :] > positions[:, None] - window
    return ok


def check_norm(ck: Checks, rec: dict, prefix: str, fn, x: torch.Tensor, what: str) -> torch.Tensor:
    """A norm's three names: `hook_out` = the module's formula from its weights, and TransformerLens's
    `hook_scale` / `hook_normalized` (before the weight). Returns the recorded output."""
    out = rec[prefix + ".hook_out"]
    ck.close(f"{what} (norm output)", prefix + ".hook_out", out, fn(x))
    ck.close("scale = sqrt(mean(x²) + eps)", prefix + ".hook_scale", rec[prefix + ".hook_scale"], fn.scale(x))
    ck.close("normalized = x / scale (before the weight)", prefix + ".hook_normalized", rec[prefix + ".hook_normalized"], fn.normalized(x))
    return out


def check_attention(ck: Checks, rec: dict, p: str, ref: BlockRef, cos_sin, positions: torch.Tensor) -> None:
    """Recompute q/k/v, RoPE, scores, pattern, z and attn_out of one block over a prefill-like forward."""
    t = len(positions)
    ln1 = rec[p + "ln1.hook_out"]
    q_name, k_name = ("attn.hook_q", "attn.hook_k")
    ck.close("qkv = ln1·W (+b)", p + q_name, rec[p + q_name], ref.q(ln1).reshape(t, ref.n_heads, ref.d_head))
    ck.close("qkv = ln1·W (+b)", p + k_name, rec[p + k_name], ref.k(ln1).reshape(t, ref.n_kv, ref.d_head))
    ck.close("qkv = ln1·W (+b)", p + "attn.hook_v", rec[p + "attn.hook_v"], ref.v(ln1).reshape(t, ref.n_kv, ref.d_head))
    q, k = rec[p + q_name], rec[p + k_name]
    if ref.q_norm is not None:
        ck.close("q/k per-head norm", p + "attn.hook_q_normed", rec[p + "attn.hook_q_normed"], ref.q_norm(q))
        ck.close("q/k per-head norm", p + "attn.hook_k_normed", rec[p + "attn.hook_k_normed"], ref.k_norm(k))
        q, k = rec[p + "attn.hook_q_normed"], rec[p + "attn.hook_k_normed"]
    if ref.rotary:
        cos, sin = cos_sin
        ck.close("rot = RoPE(q/k)", p + "attn.hook_rot_q", rec[p + "attn.hook_rot_q"], rope(q, cos, sin))
        ck.close("rot = RoPE(q/k)", p + "attn.hook_rot_k", rec[p + "attn.hook_rot_k"], rope(k, cos, sin))
        q, k = rec[p + "attn.hook_rot_q"], rec[p + "attn.hook_rot_k"]
    scores = torch.einsum("thd,shd->hts", q, _repeat_kv(k, ref.n_heads)) * ref.scaling  # [H, T, S]
    if ref.attn_softcap:
        scores = torch.tanh(scores / ref.attn_softcap) * ref.attn_softcap
    ok = allowed(positions, positions, ref.window)  # [T, S]
    scores = scores.masked_fill(~ok, float("-inf"))
    ck.close("scores = q·kᵀ·scale, masked", p + "attn.hook_attn_scores", rec[p + "attn.hook_attn_scores"], scores)
    pattern = rec[p + "attn.hook_pattern"]
    ck.close("pattern = softmax(scores)", p + "attn.hook_pattern", pattern, torch.softmax(rec[p + "attn.hook_attn_scores"], -1))
    ck.close("pattern rows sum to 1", p + "attn.hook_pattern", pattern.sum(-1), torch.ones(pattern.shape[:2], dtype=D))
    ck.true("pattern 0 above diagonal / outside window", p, bool((pattern[:, ~ok] == 0).all()))
    if ref.window is not None and t > ref.window:
        ck.true("sliding window visible in pattern", p, bool((pattern[:, -1, : t - ref.window] == 0).all()))
    z = torch.einsum("hts,shd->thd", pattern, _repeat_kv(rec[p + "attn.hook_v"], ref.n_heads))  # [T, H, d_head]
    ck.close("z = pattern·v", p + "attn.hook_z", rec[p + "attn.hook_z"], z)
    ck.close("attn_out = z·W_O (+b)", p + "hook_attn_out", rec[p + "hook_attn_out"], ref.o(rec[p + "attn.hook_z"].reshape(t, -1)))


def check_mlp(ck: Checks, rec: dict, p: str, ref: BlockRef) -> None:
    ln2 = rec[p + "ln2.hook_out"]
    if ref.mlp == "moe":
        probs = rec[p + "mlp.hook_router_probs"]  # [T, n_experts]
        ids = rec[p + "mlp.hook_expert_ids"]  # [T, top_k]
        ck.close("router_probs = softmax(ln2·W_router)", p, probs, torch.softmax(ref.router(ln2), -1))
        ck.close("router rows sum to 1", p, probs.sum(-1), torch.ones(probs.shape[0], dtype=D))
        top = torch.topk(probs, ref.top_k, dim=-1)
        ck.true("expert_ids = top-k(router_probs)", p, torch.equal(ids.long(), top.indices))
        w = top.values / top.values.sum(-1, keepdim=True) if ref.norm_topk else top.values  # [T, top_k]
        want = torch.stack(
            [sum(w[t, j] * ref.experts[int(ids[t, j])](ln2[t : t + 1])[0] for j in range(ref.top_k)) for t in range(len(ln2))]
        )  # [T, d_model]
        ck.close("mlp_out = Σ w·expert(ln2)", p + "hook_mlp_out", rec[p + "hook_mlp_out"], want)
        return
    pre = rec[p + "mlp.hook_pre"]
    ck.close("mlp pre = ln2·W_in (+b)", p + "mlp.hook_pre", pre, ref.gate(ln2))
    if ref.mlp == "gated":
        ck.close("mlp pre_linear = ln2·W_up", p + "mlp.hook_pre_linear", rec[p + "mlp.hook_pre_linear"], ref.up(ln2))
        post = ref.act(pre) * rec[p + "mlp.hook_pre_linear"]
    else:
        post = ref.act(pre)
    ck.close("mlp post = act(pre) (* pre_linear)", p + "mlp.hook_post", rec[p + "mlp.hook_post"], post)
    ck.close("mlp_out = post·W_out (+b)", p + "hook_mlp_out", rec[p + "hook_mlp_out"], ref.down(rec[p + "mlp.hook_post"]))


def check_block(ck: Checks, rec: dict, layer: int, ref: BlockRef, cos_sin, positions: torch.Tensor) -> None:
    """The block's own equations: norms, attention, the residual sums of this family, the MLP."""
    p = f"blocks.{layer}."
    pre = rec[p + "hook_resid_pre"]
    check_norm(ck, rec, p + "ln1", ref.ln1, pre, "ln1 = norm(resid_pre)")
    check_attention(ck, rec, p, ref, cos_sin, positions)
    attn_added = rec[p + "hook_attn_out"]
    if ref.ln1_post is not None:
        attn_added = check_norm(ck, rec, p + "ln1_post", ref.ln1_post, attn_added, "ln1_post = norm(attn_out)")
    if ref.parallel:
        ck.true("parallel block has no resid_mid", p, p + "hook_resid_mid" not in rec)
        check_norm(ck, rec, p + "ln2", ref.ln2, pre, "ln2 = norm(resid_pre) (parallel)")
    else:
        ck.close("resid_mid = resid_pre + attn_out", p + "hook_resid_mid", rec[p + "hook_resid_mid"], pre + attn_added)
        check_norm(ck, rec, p + "ln2", ref.ln2, rec[p + "hook_resid_mid"], "ln2 = norm(resid_mid)")
    check_mlp(ck, rec, p, ref)
    mlp_added = rec[p + "hook_mlp_out"]
    if ref.ln2_post is not None:
        mlp_added = check_norm(ck, rec, p + "ln2_post", ref.ln2_post, mlp_added, "ln2_post = norm(mlp_out)")
    if ref.parallel:
        want = pre + rec[p + "hook_attn_out"] + mlp_added
        ck.close("resid_post = resid_pre + attn_out + mlp_out", p + "hook_resid_post", rec[p + "hook_resid_post"], want)
    else:
        want = rec[p + "hook_resid_mid"] + mlp_added
        ck.close("resid_post = resid_mid + mlp_out", p + "hook_resid_post", rec[p + "hook_resid_post"], want)


def check_head_and_final(ck: Checks, rec: dict, head: HeadRef, ids: torch.Tensor, positions: torch.Tensor, n_layers: int) -> None:
    """Embedding (scaled where the family scales), positions, block chaining, final norm, logits."""
    embed = head.embed[ids] * head.embed_scale  # [T, d_model]
    ck.close("embed = W_E[ids] (·scale)", "hook_embed", rec["hook_embed"], embed)
    first = rec["hook_embed"]
    if head.pos_embed is not None:
        ck.close("pos_embed = W_pos[positions]", "hook_pos_embed", rec["hook_pos_embed"], head.pos_embed[positions])
        first = first + rec["hook_pos_embed"]
    ck.close("resid_pre(0) = embed (+ pos_embed)", "blocks.0.hook_resid_pre", rec["blocks.0.hook_resid_pre"], first)
    check_chain_and_unembed(ck, rec, head, n_layers)


def check_chain_and_unembed(ck: Checks, rec: dict, head: HeadRef, n_layers: int) -> None:
    """Blocks chain (resid_pre(L+1) is resid_post(L)), ln_final normalises the last block's output,
    and the logits unembed ln_final."""
    for layer in range(1, n_layers):
        got, want = rec[f"blocks.{layer}.hook_resid_pre"], rec[f"blocks.{layer - 1}.hook_resid_post"]
        ck.true("resid_pre(L+1) = resid_post(L)", f"block {layer}", torch.equal(got, want))
    last = rec[f"blocks.{n_layers - 1}.hook_resid_post"]
    ln_final = check_norm(ck, rec, "ln_final", head.final_norm, last, "ln_final = norm(resid_post)")
    ck.close("logits = unembed(ln_final)", "logits", rec["logits"], head.unembed(ln_final))


def check_logit_lens(ck: Checks, step: dict, head: HeadRef, n_layers: int) -> None:
    """logit_lens = top-k of softmax(unembed(ln_final(resid_post_L))) at the step's last position."""
    for layer in range(n_layers):
        resid = step[f"blocks.{layer}.hook_resid_post"][-1:]  # [1, d_model]
        probs = torch.softmax(head.unembed(head.final_norm(resid)), -1)[0]  # [vocab]
        ids, got = step["logit_lens.ids"][layer].long(), step["logit_lens.probs"][layer]
        ck.close("logit lens = unembed(ln_final(resid_post))", f"layer {layer}", got, probs[ids])
        ck.close("logit lens = unembed(ln_final(resid_post))", f"layer {layer} top-k", got, torch.topk(probs, len(ids)).values)


def check_step_matches_full(ck: Checks, step: dict, full: dict, start: int, end: int) -> None:
    """Every recorded tensor of a step equals the matching rows (and key columns) of the full forward.

    Scores and patterns cover the keys the step attended: the last S positions up to `end` (S is
    shorter than `end` on sliding-window layers whose cache keeps only the window).
    """
    for name, got in step.items():
        if name.startswith(("sample.", "logit_lens.")) or name.endswith(("attn.hook_result", "attn.hook_o_input")):
            continue  # the last position only (tests/reader/test_attribution.py checks hook_result against z·W_O)
        want = full[name]
        if name.endswith(("hook_attn_scores", "hook_pattern")):
            s = got.shape[-1]
            ck.close("decode step = full forward rows", name, got, want[:, start:end, end - s : end], "step_vs_full")
            dropped = want[:, start:end, : end - s]  # keys the step did not see: masked in the full forward too
            masked = torch.isneginf(dropped) if name.endswith("scores") else dropped == 0
            ck.true("keys dropped by the window cache were masked", name, bool(masked.all()))
        else:
            ck.close("decode step = full forward rows", name, got, want[start:end], "step_vs_full")


def check_generic(ck: Checks, rec: dict, head: HeadRef, ids: torch.Tensor, n_layers: int) -> None:
    """What the generic fallback promises: embedding, block chaining, final norm and logits."""
    ck.close("embed = W_E[ids] (·scale)", "hook_embed", rec["hook_embed"], head.embed[ids] * head.embed_scale)
    check_chain_and_unembed(ck, rec, head, n_layers)
