"""Architecture facts, the parameter-count table and the family's real data flow of a trace's
model (manifest only): the block's equations (`data_flow`), which layers are local (sliding
window) or global, the experts, the names the family does not have (`not_applicable`), its extra
names, and the names the generic fallback could not record (`missing_names`)."""

from __future__ import annotations

from dataclasses import dataclass, field

from stepscope.tracer.model_info import is_generic_fallback, renormalises_top_k
from stepscope.tracer.names import FAMILY_EXTRAS

PARAM_ORDER = ("embedding", "attention", "mlp", "norms", "lm_head")
EXTRA_NAMES = FAMILY_EXTRAS  # block names only some families have


@dataclass(frozen=True)
class ParamRow:
    component: str
    count: int
    share: float  # of the total


@dataclass(frozen=True)
class ModelOverview:
    facts: list[tuple[str, str]]  # (label, value)
    params: list[ParamRow]
    total: int
    data_flow: list[str]  # one line per stage of a block, when the manifest describes it
    layer_kinds: list[tuple[str, str]] = field(default_factory=list)  # ("local (window 4)", "0, 2, 4–8")
    not_applicable: list[str] = field(default_factory=list)  # block names the family does not have
    extras: list[str] = field(default_factory=list)  # family-specific block names it records
    missing: list[str] = field(default_factory=list)  # names the (generic) adapter could not find
    notes: list[str] = field(default_factory=list)  # family specifics (scaled embedding, soft-caps, ...)
    generic: bool = False  # traced by the generic fallback


def human_count(n: int) -> str:
    """135_000_000 -> "135.0M"."""
    for unit, size in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= size:
            return f"{n / size:.1f}{unit}"
    return str(n)


def _fact(value) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


def spans(numbers: list[int]) -> str:
    """[0, 2, 3, 4, 7] -> "0, 2–4, 7"."""
    out, i = [], 0
    while i < len(numbers):
        j = i
        while j + 1 < len(numbers) and numbers[j + 1] == numbers[j] + 1:
            j += 1
        out.append(str(numbers[i]) if j == i else f"{numbers[i]}–{numbers[j]}")
        i = j + 1
    return ", ".join(out)


def layer_kinds(m: dict) -> list[tuple[str, str]]:
    """Local (sliding-window) and global layers, when the model has any sliding layer."""
    window = m.get("sliding_window")
    if not window:
        return []
    n = int(m.get("n_layers") or 0)
    types = list(m.get("layer_types") or ["sliding_attention"] * n)
    local = [i for i, t in enumerate(types) if "sliding" in str(t)]
    full = [i for i, t in enumerate(types) if "sliding" not in str(t)]
    kinds = [(f"local (window {window})", spans(local))] if local else []
    return kinds + ([("global (all positions)", spans(full))] if full else [])


def experts_fact(m: dict) -> str:
    n = m.get("n_experts")
    if not n:
        return "—"
    k = m.get("experts_per_token")
    weights = {True: ", weights renormalised over the top-k", False: ", weights = router probabilities", None: ""}.get(
        renormalises_top_k(m), "")
    dense = m.get("mlp_only_layers") or []
    return f"{n}, top-{k} per token{weights}" + (f"; dense MLP at layers {spans(sorted(dense))}" if dense else "")


def family_notes(m: dict) -> list[str]:
    """One line per family specific the data flow depends on."""
    notes = []
    if m.get("embed_scale"):
        notes.append(f"hook_embed is scaled by √d_model = {m['embed_scale']:.4g}")
    if m.get("norm_weight"):
        notes.append(f"norm weights applied as ({m['norm_weight']})")
    if m.get("post_norms"):
        notes.append("post-norms: ln1_post / ln2_post (not attn_out / mlp_out) are added to the residual")
    if m.get("parallel_attn_mlp"):
        notes.append("parallel attention + MLP: resid_post = resid_pre + attn_out + mlp_out (no resid_mid)")
    if m.get("attn_logit_softcapping"):
        notes.append(f"attention scores soft-capped at {m['attn_logit_softcapping']:g}")
    if m.get("final_logit_softcapping"):
        notes.append(f"final logits soft-capped at {m['final_logit_softcapping']:g}")
    rotary, d_head = m.get("rotary_dim"), m.get("d_head")
    if rotary and d_head and int(rotary) < int(d_head):
        notes.append(f"partial rotary: RoPE turns {rotary} of {d_head} features per head")
    if m.get("positional") == "absolute":
        notes.append("learned absolute positions: resid_pre of block 0 = embed + pos_embed")
    return notes


def model_overview(trace) -> ModelOverview:
    m = trace.model
    n_heads, n_kv = m.get("n_heads"), m.get("n_kv_heads") or m.get("n_heads")
    if n_kv == n_heads:
        attention = "multi-head"
    elif n_kv == 1:
        attention = "multi-query (MQA)"
    else:
        attention = f"grouped-query (GQA), {n_heads // n_kv} query heads per KV head"
    dtype = trace.manifest.get("dtype") or {}
    facts = [
        ("name", _fact(m.get("name"))), ("family", _fact(m.get("family"))),
        ("architecture", _fact(m.get("architecture"))), ("layers", _fact(m.get("n_layers"))),
        ("d_model", _fact(m.get("d_model"))), ("heads", f"{n_heads} query, {n_kv} key/value"),
        ("attention", attention), ("d_head", _fact(m.get("d_head"))), ("d_mlp", _fact(m.get("d_mlp"))),
        ("vocab", _fact(m.get("vocab_size"))), ("context", _fact(m.get("n_ctx"))),
        ("positional", _fact(m.get("positional"))), ("norm", _fact(m.get("norm"))),
        ("activation", _fact(m.get("act"))), ("gated MLP", _fact(m.get("gated_mlp"))),
        ("parallel attn/MLP", _fact(m.get("parallel_attn_mlp"))),
        ("sliding window", _fact(m.get("sliding_window"))), ("experts", experts_fact(m)),
        ("dtype", f"{dtype.get('model', '—')} (stored {dtype.get('stored', '—')})"),
        ("device", _fact(trace.manifest.get("device"))),
    ]
    counts = {k: int(v) for k, v in (m.get("params") or {}).items()
              if isinstance(v, (int, float)) and not isinstance(v, bool)}  # flags such as tied_embeddings are facts
    total = counts.pop("total", 0) or sum(counts.values())
    keys = [k for k in PARAM_ORDER if k in counts] + [k for k in counts if k not in PARAM_ORDER and counts[k]]
    rows = [ParamRow(k, counts[k], counts[k] / total if total else 0.0) for k in keys]
    tied = (m.get("params") or {}).get("tied_embeddings")
    if tied is not None:
        facts.append(("tied embeddings", _fact(bool(tied))))
    flow = [str(line) for line in m.get("data_flow") or []]
    not_applicable = [str(n) for n in m.get("not_applicable") or [] if n not in EXTRA_NAMES]
    generic = is_generic_fallback(m)
    known = "not_applicable" in m and not generic  # older traces do not say
    extras = [n for n in EXTRA_NAMES if known and n not in m["not_applicable"]]
    return ModelOverview(facts, rows, total, flow, layer_kinds(m), not_applicable, extras,
                         [str(n) for n in m.get("missing_names") or []], family_notes(m), generic)
