"""Rich renderables for `stepscope info`: the architecture/parameter table and a trace summary."""

from __future__ import annotations

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from stepscope.tracer.budget import disk_bytes
from stepscope.tracer.inert import inert
from stepscope.tracer.names import FAMILY_EXTRAS
from stepscope.tracer.trace_format import human_bytes

FACT_ROWS = [
    ("family", "family"),
    ("architecture", "architecture"),
    ("layers", "n_layers"),
    ("d_model", "d_model"),
    ("heads", "n_heads"),
    ("KV heads", "n_kv_heads"),
    ("d_head", "d_head"),
    ("d_mlp", "d_mlp"),
    ("vocab", "vocab_size"),
    ("context", "n_ctx"),
    ("positions", "positional"),
    ("norm", "norm"),
    ("activation", "act"),
    ("gated MLP", "gated_mlp"),
    ("parallel attn/MLP", "parallel_attn_mlp"),
    ("sliding window", "sliding_window"),
    ("experts", "n_experts"),
    ("experts per token", "experts_per_token"),
    ("rotary dims", "rotary_dim"),
]
PARAM_ROWS = ["embedding", "attention", "mlp", "norms", "lm_head", "other", "total"]


def _fmt_count(n: int) -> str:
    """`5,637,100,000  (5.64 B)`: the exact count, then a short form in K, M or B."""
    for unit, size, digits in (("B", 1e9, 2), ("M", 1e6, 1), ("K", 1e3, 0)):
        if n >= max(size, 1e5):
            return f"{n:,}  ({n / size:.{digits}f} {unit})"
    return f"{n:,}"


def model_table(facts: dict) -> Group:
    """Architecture facts and parameter counts per component of a model."""
    name = Text(inert(facts.get("name", "model")), style="bold italic", no_wrap=True, overflow="ellipsis")  # one line
    arch = Table(show_header=False, box=None, pad_edge=False)
    arch.add_column(style="bold")
    arch.add_column()
    for label, key in FACT_ROWS:
        value = facts.get(key)
        if value is not None:
            arch.add_row(label, Text(inert(value)))
    params = Table(title="parameters", box=None)
    params.add_column("component", style="bold")
    params.add_column("count", justify="right")
    params.add_column("share", justify="right")
    counts = facts.get("params", {})
    total = counts.get("total") or 1
    for key in PARAM_ROWS:
        n = counts.get(key)
        if n is None or (n == 0 and key == "other"):
            continue
        note = " (tied to embedding)" if key == "lm_head" and counts.get("tied_embeddings") else ""
        params.add_row(inert(key, 40), _fmt_count(n) + note, f"{100 * n / total:.1f}%")
    parts: list[RenderableType] = [name, arch, Text(""), params]
    flow = facts.get("data_flow")
    if flow:
        parts += [Text(""), Text("data flow", style="bold")]
        parts += [Text(f"  {inert(line)}") for line in ([flow] if isinstance(flow, str) else flow)]
    kinds = facts.get("layer_types")
    if kinds and len(set(kinds)) > 1:
        summary = ", ".join(f"{inert(k, 60)}: {sum(1 for x in kinds if x == k)}" for k in dict.fromkeys(kinds))
        parts.append(Text(f"layer types: {summary}"))
    absent = [n for n in facts.get("not_applicable") or [] if n not in FAMILY_EXTRAS]
    if absent:
        parts.append(Text("not in this family: " + ", ".join(inert(n, 100) for n in absent)))
    if facts.get("missing_names"):
        parts.append(Text("not recorded (generic adapter): " + ", ".join(inert(n, 100) for n in facts["missing_names"]), style="yellow"))
    return Group(*parts)


def trace_summary(trace) -> Group:
    """Prompt, generated tokens, settings and size of a trace."""
    m = trace.manifest
    t = Table(show_header=False, box=None, pad_edge=False)
    t.add_column(style="bold")
    t.add_column()
    generated = "".join(tok["text"] for tok in trace.tokens[trace.prompt_len :])
    rows = [
        ("trace", trace.path),
        ("prompt", repr(m.get("prompt", ""))),
        ("chat template", str(m.get("chat"))),
        ("prompt tokens", str(trace.prompt_len)),
        ("steps", f"{len(trace.steps)} (finished: {m.get('finished')}, stop: {m.get('stop_reason')})"),
        ("generated", repr(generated)),
        ("sampling", ", ".join(f"{k}={v}" for k, v in m["generation"].items())),
        ("dtype", f"model {(m.get('dtype') or {}).get('model')}, stored {(m.get('dtype') or {}).get('stored')}"),
        ("size", human_bytes(disk_bytes(trace.path))),  # every file, as `du --apparent-size` counts
    ]
    for label, value in rows:
        t.add_row(label, Text(inert(value, 2000)))  # data, never markup nor terminal control
    return Group(t)
