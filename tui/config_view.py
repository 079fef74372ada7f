"""Rich renderables for what `stepscope info` adds to the model table: weights' origin, active parameters, KV cache."""

from __future__ import annotations

from rich.console import Group
from rich.table import Table
from rich.text import Text

from stepscope.tracer.inert import inert
from stepscope.tracer.trace_format import human_bytes


def _count(n: int) -> str:
    return f"{n:,}  ({n / 1e9:.2f} B)" if n >= 1e9 else f"{n:,}  ({n / 1e6:.1f} M)"


def config_extras(facts: dict) -> Group:
    """Where the numbers and weights come from, total vs active parameters, KV-cache bytes per token."""
    t = Table(show_header=False, box=None, pad_edge=False)
    t.add_column(style="bold")
    t.add_column()
    params = facts.get("params") or {}
    if facts.get("from_config"):
        t.add_row("counted from", Text("the config alone (no weights loaded)"))
    if facts.get("params_note"):
        t.add_row("note", Text(inert(str(facts["params_note"])), style="yellow"))
    if facts.get("weights"):
        t.add_row("weights", Text(inert(str(facts["weights"]))))
    if params.get("total"):
        t.add_row("total parameters", Text(_count(params["total"])))
    stored = facts.get("checkpoint_params")
    if stored is not None and params.get("total"):
        verdict = "equal to the count" if stored == params["total"] else f"{stored - params['total']:+,} against the count"
        t.add_row("in the checkpoint", Text(f"{stored:,} ({verdict}; safetensors headers only)"))
    if params.get("active") is not None and params.get("active") != params.get("total"):
        share = 100 * params["active"] / params["total"]
        t.add_row("active per token", Text(f"{_count(params['active'])}, {share:.1f}% of the total"))
    kv = facts.get("kv_cache")
    if kv:
        dtype = f"{kv['dtype_bytes']}-byte values"
        line = f"{human_bytes(kv['bytes_per_token'])} per token ({kv['kind']}, {dtype})"
        if kv["kind"] != "MHA":
            line += f"; full multi-head attention would need {human_bytes(kv['mha_bytes_per_token'])} ({100 * kv['saving']:.1f}% saved)"
        t.add_row("KV cache", Text(line))
    return Group(t)
