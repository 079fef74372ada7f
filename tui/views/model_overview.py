"""Architecture facts and the parameter-count table of a trace's model (manifest only)."""

from __future__ import annotations

from dataclasses import dataclass

PARAM_ORDER = ("embedding", "attention", "mlp", "norms", "lm_head")


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
        ("sliding window", _fact(m.get("sliding_window"))), ("experts", _fact(m.get("n_experts"))),
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
    return ModelOverview(facts, rows, total, flow)
