"""A small, self-consistent synthetic trace of a Llama-like model (GQA), written with TraceWriter.

    from tests.support.synthetic_trace import build_trace
    path = build_trace(tmp_path / "trace")            # -> directory; tracer.load_trace(path)

Shapes follow docs/TRACE_FORMAT.md exactly: n_layers=2, d_model=16, n_heads=4, n_kv_heads=2,
d_head=4, d_mlp=32, vocab=50; a 6-token prompt then `n_decode` decode steps. Attention patterns
are softmax-normalised under the causal mask; scores hold -inf where masked. Token texts
include `Ġ`, a newline, a tab, special tokens, markup-looking text and raw control characters.
"""

from __future__ import annotations

import os

import numpy as np

from stepscope.tracer.names import NameFilter, block_name
from stepscope.tracer.writer import TraceWriter

N_LAYERS, D_MODEL, N_HEADS, N_KV_HEADS, D_HEAD, D_MLP, VOCAB = 2, 16, 4, 2, 4, 32, 50
LENS_K = 5
SPECIAL_IDS = [0, 1, 2]

# id -> decoded text of that single id (ids not listed decode to "w{id}")
TEXTS: dict[int, str] = {
    0: "<|endoftext|>",
    1: "<|im_start|>",
    2: "<|im_end|>",
    3: "The",
    4: "Ġcapital",
    5: " of",
    6: "[red]x[/red]",
    7: "\n",
    8: " Paris",
    9: "\x1b[31m",
    10: "\x07",
    11: "\t",
    12: "[bold]",
}
PROMPT_IDS = [1, 3, 4, 5, 6, 7]
CHOSEN_IDS = [8, 9, 10, 11, 2, 12, 3, 5]  # the token each step chooses, in order

BLOCK_RECORDED = [
    "hook_resid_pre", "ln1.hook_normalized", "attn.hook_q", "attn.hook_k", "attn.hook_v",
    "attn.hook_rot_q", "attn.hook_rot_k", "attn.hook_attn_scores", "attn.hook_pattern", "attn.hook_z",
    "hook_attn_out", "hook_resid_mid", "ln2.hook_normalized", "mlp.hook_pre", "mlp.hook_pre_linear",
    "mlp.hook_post", "hook_mlp_out", "hook_resid_post",
]  # every BLOCK_NAMES entry a Llama has


def token_text(token_id: int) -> str:
    return TEXTS.get(token_id, f"w{token_id}")


def _token(token_id: int, position: int) -> dict:
    return {"id": token_id, "text": token_text(token_id), "special": token_id in SPECIAL_IDS, "position": position}


def model_facts() -> dict:
    attn = N_LAYERS * (D_MODEL * N_HEADS * D_HEAD + 2 * D_MODEL * N_KV_HEADS * D_HEAD + N_HEADS * D_HEAD * D_MODEL)
    mlp = N_LAYERS * 3 * D_MODEL * D_MLP
    norms = (2 * N_LAYERS + 1) * D_MODEL
    params = {"embedding": VOCAB * D_MODEL, "attention": attn, "mlp": mlp, "norms": norms, "lm_head": 0}
    params["total"] = sum(params.values())
    return {
        "name": "tiny-synthetic-llama", "source": "synthetic", "family": "llama", "architecture": "LlamaForCausalLM",
        "n_layers": N_LAYERS, "d_model": D_MODEL, "n_heads": N_HEADS, "n_kv_heads": N_KV_HEADS, "d_head": D_HEAD,
        "d_mlp": D_MLP, "vocab_size": VOCAB, "n_ctx": 4096, "positional": "rotary", "norm": "rmsnorm",
        "act": "silu", "gated_mlp": True, "parallel_attn_mlp": False, "sliding_window": None, "n_experts": None,
        "params": params, "config": {"model_type": "llama", "tie_word_embeddings": True},
        "not_applicable": ["attn.hook_q_normed", "attn.hook_k_normed", "ln1_post.hook_normalized",
                           "ln2_post.hook_normalized", "mlp.hook_router_probs", "mlp.hook_expert_ids",
                           "hook_pos_embed"],
        "missing_names": [],
    }


def _manifest(n_decode: int, settings: dict, stored: str, record: list[str], prompt_ids: list[int]) -> dict:
    return {
        "schema": "stepscope.trace", "schema_version": 1, "created": "2026-11-22T14:00:00Z",
        "model": model_facts(),
        "tokenizer": {"name": "synthetic", "vocab_size": VOCAB, "bos_token_id": 1, "eos_token_ids": [0],
                      "special_ids": SPECIAL_IDS},
        "prompt": "".join(token_text(i) for i in prompt_ids), "chat": False, "prompt_len": len(prompt_ids),
        "generation": dict(settings, seed=0, max_new_tokens=n_decode + 1, logit_lens_k=LENS_K),
        "dtype": {"model": "float32", "stored": stored}, "device": "cpu",
        "attn_implementation": "stepscope-eager", "record": record,
        "versions": {"stepscope": "0.1.0", "python": "3.11"},
        "tokens": [_token(t, p) for p, t in enumerate(prompt_ids)],
        "steps": [], "finished": True, "stop_reason": "max_new_tokens",
    }


def _softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    e = np.exp(x - np.max(x, axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def _attention(rng, start: int, end: int) -> tuple[np.ndarray, np.ndarray]:
    """(scores [H, T, S] with -inf above the diagonal, pattern [H, T, S] rows summing to 1)."""
    t, s = end - start, end
    scores = rng.normal(0, 1.5, size=(N_HEADS, t, s)).astype(np.float32)  # [H, T, S]
    q_pos = np.arange(start, end)[:, None]  # [T, 1]
    masked = np.arange(s)[None, :] > q_pos  # [T, S]
    scores[:, masked] = -np.inf
    return scores, _softmax(scores).astype(np.float32)


def _sampling(logits: np.ndarray, chosen: int, settings: dict) -> tuple[dict, dict]:
    """(sample.* arrays, sampling record) for one step's last-position logits [V]."""
    temp, top_k, top_p, min_p = settings["temperature"], settings["top_k"], settings["top_p"], settings["min_p"]
    greedy = not settings["do_sample"]
    raw = _softmax(logits.astype(np.float64))  # [V]
    scaled = logits / (temp if not greedy else 1.0)  # [V]
    order = np.argsort(-scaled, kind="stable")  # [V]
    keep_k = VOCAB if top_k in (0, None) else top_k
    kept = order[:keep_k]  # [K]
    temp_probs = _softmax(scaled[kept].astype(np.float64))  # [K]
    cumulative = np.cumsum(temp_probs)  # [K]
    nucleus = int(np.searchsorted(cumulative, top_p - 1e-9) + 1) if top_p < 1.0 else keep_k
    nucleus = min(nucleus, keep_k)
    final = np.zeros_like(temp_probs)  # [K]
    final[:nucleus] = temp_probs[:nucleus]
    after_min_p = int(np.sum(final >= min_p * final.max())) if min_p > 0 else nucleus
    final[after_min_p:] = 0.0
    final /= final.sum()
    if greedy:
        final = np.zeros_like(final)
        final[0] = 1.0
    n = min(max(nucleus, 12), keep_k)
    ids = kept[:n]  # [N]
    arrays = {
        "sample.candidate_ids": ids.astype(np.int64),
        "sample.candidate_logits": logits[ids].astype(np.float32),
        "sample.candidate_raw_probs": raw[ids].astype(np.float32),
        "sample.candidate_temp_probs": temp_probs[:n].astype(np.float32),
        "sample.candidate_probs": final[:n].astype(np.float32),
        "sample.candidate_cumulative": cumulative[:n].astype(np.float32),
    }
    pos = int(np.where(kept == chosen)[0][0])
    entropy = float(-(final[final > 0] * np.log(final[final > 0])).sum())
    record = {
        "greedy": greedy, "temperature": temp, "top_k": top_k, "top_p": top_p, "min_p": min_p,
        "chosen_id": int(chosen), "chosen_rank": int(np.where(np.argsort(-logits, kind="stable") == chosen)[0][0]),
        "chosen_prob": float(final[pos]), "chosen_raw_prob": float(raw[chosen]),
        "chosen_temp_prob": float(temp_probs[pos]),
        "top1_id": int(np.argmax(logits)), "top1_prob": float(raw.max()),
        "entropy": entropy, "raw_entropy": float(-(raw * np.log(raw)).sum()),
        "nucleus_size": nucleus, "nucleus_mass": float(cumulative[nucleus - 1]),
        "stages": [{"name": "raw", "kept": VOCAB}, {"name": "temperature", "kept": VOCAB},
                   {"name": "top_k", "kept": keep_k}, {"name": "top_p", "kept": nucleus},
                   {"name": "min_p", "kept": after_min_p}],
    }
    return arrays, record


def _step_arrays(rng, start: int, end: int, chosen: int, settings: dict) -> tuple[dict, dict]:
    t = end - start
    arrays: dict[str, np.ndarray] = {"hook_embed": rng.normal(size=(t, D_MODEL))}  # [T, d_model]
    resid = arrays["hook_embed"]
    for layer in range(N_LAYERS):
        def put(name, value, layer=layer):
            arrays[block_name(layer, name)] = value

        put("hook_resid_pre", resid)
        put("ln1.hook_normalized", resid / np.sqrt((resid**2).mean(-1, keepdims=True) + 1e-6))  # [T, d_model]
        for qk, heads in (("q", N_HEADS), ("k", N_KV_HEADS)):
            put(f"attn.hook_{qk}", rng.normal(size=(t, heads, D_HEAD)))  # [T, heads, d_head]
            put(f"attn.hook_rot_{qk}", rng.normal(size=(t, heads, D_HEAD)))
        put("attn.hook_v", rng.normal(size=(t, N_KV_HEADS, D_HEAD)))  # [T, n_kv_heads, d_head]
        scores, pattern = _attention(rng, start, end)
        put("attn.hook_attn_scores", scores)
        put("attn.hook_pattern", pattern)
        put("attn.hook_z", rng.normal(size=(t, N_HEADS, D_HEAD)))  # [T, n_heads, d_head]
        attn_out = rng.normal(size=(t, D_MODEL))  # [T, d_model]
        put("hook_attn_out", attn_out)
        mid = resid + attn_out
        put("hook_resid_mid", mid)
        put("ln2.hook_normalized", mid / np.sqrt((mid**2).mean(-1, keepdims=True) + 1e-6))
        gate, up = rng.normal(size=(t, D_MLP)), rng.normal(size=(t, D_MLP))  # [T, d_mlp]
        put("mlp.hook_pre", gate)
        put("mlp.hook_pre_linear", up)
        put("mlp.hook_post", gate / (1 + np.exp(-gate)) * up)
        mlp_out = rng.normal(size=(t, D_MODEL))
        put("hook_mlp_out", mlp_out)
        resid = mid + mlp_out
        put("hook_resid_post", resid)
    arrays["ln_final.hook_normalized"] = resid / np.sqrt((resid**2).mean(-1, keepdims=True) + 1e-6)
    logits = rng.normal(0, 2.0, size=(t, VOCAB))  # [T, vocab]
    logits[-1, chosen] = logits[-1].max() + 1.5  # the chosen token leads the last position
    arrays["logits"] = logits
    lens_ids = np.stack([rng.permutation(VOCAB)[:LENS_K] for _ in range(N_LAYERS)])  # [n_layers, k]
    lens_ids[-1] = np.argsort(-logits[-1], kind="stable")[:LENS_K]  # the last layer agrees with logits
    lens_probs = np.sort(rng.dirichlet(np.ones(VOCAB), size=N_LAYERS), axis=-1)[:, ::-1][:, :LENS_K]
    arrays["logit_lens.ids"] = lens_ids.astype(np.int64)
    arrays["logit_lens.probs"] = np.ascontiguousarray(lens_probs)
    sample_arrays, record = _sampling(logits[-1], chosen, settings)
    arrays.update(sample_arrays)
    return arrays, record


def build_trace(path: str | os.PathLike, n_decode: int = 4, *, stored: str = "float32", do_sample: bool = True,
                record: list[str] | None = None, seed: int = 0, nan_in: str | None = None,
                prompt_ids: list[int] | None = None) -> str:
    """Write a synthetic trace of 1 prefill + `n_decode` decode steps; returns its directory.

    `record`: name patterns to keep (as `--record`); `nan_in`: a name that gets a NaN and an inf
    at step 0 (listed in the step entry's `nonfinite`); `prompt_ids`: another prompt (default PROMPT_IDS).
    """
    path = os.fspath(path)
    settings = {"do_sample": do_sample, "temperature": 0.8 if do_sample else 1.0, "top_k": 0,
                "top_p": 0.9 if do_sample else 1.0, "min_p": 0.0}
    keep = NameFilter(record)
    prompt_ids = list(prompt_ids or PROMPT_IDS)
    writer = TraceWriter(path, _manifest(n_decode, settings, stored, record or ["*"], prompt_ids), background=False)
    rng = np.random.default_rng(seed)
    prompt_len = len(prompt_ids)
    for index in range(n_decode + 1):
        start, end = (0, prompt_len) if index == 0 else (prompt_len + index - 1, prompt_len + index)
        chosen = CHOSEN_IDS[index % len(CHOSEN_IDS)]
        arrays, sampling = _step_arrays(rng, start, end, chosen, settings)
        if index == 0 and nan_in is not None:
            arrays[nan_in] = np.array(arrays[nan_in], dtype=np.float64)
            arrays[nan_in].flat[0], arrays[nan_in].flat[1] = np.nan, np.inf
        arrays = {k: v.astype(np.int64 if v.dtype.kind == "i" else stored) for k, v in arrays.items() if keep(k)}
        token = _token(chosen, end)
        entry = {"index": index, "kind": "prefill" if index == 0 else "decode", "positions": [start, end],
                 "token": token, "nonfinite": [nan_in] if index == 0 and nan_in in arrays else [],
                 "seconds": 0.01, "sampling": sampling}
        writer.add_step(arrays, entry, token)
    writer.close()
    return path
