"""Per-layer and per-head summaries of a step, tolerant of names not recorded (values are None).

Layer row: residual-stream norm at the last position (`hook_resid_post`), mean attention entropy
over heads of the last query row, logit-lens top-1 token, and on mixture-of-experts models the
experts the last position chose (the layers list draws these rows). Head row: entropy of the last row, the largest weight and the
key position it goes to (on a sliding-window layer column j is position end - S + j), the KV head
read (the heads list draws these rows). Grid: layers × heads entropy (the heads overview draws it). With an attention sink (manifest fact) the entropy is over the
keys and the sink (the row's whole distribution); the largest weight is over the keys only.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from stepscope.tracer.geometry import kv_head_of, sink_columns
from stepscope.tracer.names import block_name
from stepscope.tui.text import escape_for_display
from stepscope.tui.views.cache import cached
from stepscope.tui.views.heatmap import key_span, no_attention
from stepscope.tui.views.logit_lens import LensToken, logit_lens
from stepscope.tui.views.mlp import ExpertChoice, routing
from stepscope.tui.views.vocab import tok_text

DASH = "—"


@dataclass(frozen=True)
class HeadStats:
    """Last-query-row statistics of every head of one layer."""

    entropy: np.ndarray  # [n_heads] nats
    max_weight: np.ndarray  # [n_heads]
    max_position: np.ndarray  # [n_heads] key position of the largest weight


@dataclass(frozen=True)
class LayerRow:
    layer: int
    resid_norm: float | None
    attn_entropy: float | None  # mean over heads, nats
    lens: LensToken | None  # the logit lens's top-1 token (raw text: display it with tui.text.display_token)
    experts: tuple[ExpertChoice, ...] | None = None  # chosen by the last position (MoE models only)
    no_attention: str | None = None  # why the layer has no attention map (manifest facts), else None


@dataclass(frozen=True)
class HeadRow:
    head: int
    kv_head: int
    entropy: float | None
    max_weight: float | None
    max_position: int | None
    max_token: str | None  # escaped text at max_position


def fmt(value, spec: str = ".3f") -> str:
    """A number formatted, or the dash for a value that was not recorded."""
    return DASH if value is None or (isinstance(value, float) and np.isnan(value)) else format(value, spec)


def entropy(p: np.ndarray) -> np.ndarray:
    """Entropy in nats along the last axis (0·log 0 = 0)."""
    p = np.asarray(p, dtype=np.float64)
    logp = np.log(np.where(p > 0, p, 1.0))  # [..., S]
    return -(p * logp).sum(axis=-1)


def head_stats(trace, step_index: int, layer: int) -> HeadStats | None:
    """Statistics of the last query row of each head; None when the pattern was not recorded."""
    step = trace.steps[step_index]
    name = block_name(layer, "attn.hook_pattern")
    if name not in step:
        return None

    def build() -> HeadStats:
        last = np.asarray(step[name][:, -1, :], dtype=np.float64)  # [n_heads, S(+sink)]
        keys = last[:, : last.shape[1] - sink_columns(trace.model)]  # [n_heads, S]
        first_key = key_span(trace, step_index, layer)[0]
        return HeadStats(entropy(last), keys.max(axis=-1), first_key + keys.argmax(axis=-1))

    return cached(step, ("head_stats", layer), build)


def resid_norm(trace, step_index: int, layer: int) -> float | None:
    step = trace.steps[step_index]
    name = block_name(layer, "hook_resid_post")
    if name not in step:
        return None
    return cached(step, ("resid_norm", layer),
                  lambda: float(np.linalg.norm(np.asarray(step[name][-1], dtype=np.float64))))  # [d_model] -> ()


def layer_experts(trace, step_index: int, layer: int) -> tuple[ExpertChoice, ...] | None:
    """The experts the last position of the step chose at a layer; None when not an MoE layer."""
    if not trace.model.get("n_experts"):
        return None
    r = routing(trace, step_index, layer)
    return r.chosen if r is not None else None


def layer_rows(trace, step_index: int, layers: Iterable[int] | None = None) -> list[LayerRow]:
    """The rows of `layers` (default: every layer); only those are read."""
    lens = logit_lens(trace, step_index)
    rows = []
    for layer in range(int(trace.model["n_layers"])) if layers is None else layers:
        hs = head_stats(trace, step_index, layer)
        top = lens.rows[layer].top1 if lens is not None and layer < len(lens.rows) else None
        rows.append(LayerRow(
            layer, resid_norm(trace, step_index, layer), float(hs.entropy.mean()) if hs is not None else None,
            top, layer_experts(trace, step_index, layer), no_attention(trace.model, layer),
        ))
    return rows


def head_rows(trace, step_index: int, layer: int) -> list[HeadRow]:
    model = trace.model
    hs = head_stats(trace, step_index, layer)
    tokens = trace.tokens
    rows = []
    for head in range(int(model["n_heads"])):
        if hs is None:
            rows.append(HeadRow(head, kv_head_of(model, head), None, None, None, None))
            continue
        pos = int(hs.max_position[head])
        text = escape_for_display(tok_text(tokens[pos])) if pos < len(tokens) else None
        rows.append(HeadRow(head, kv_head_of(model, head), float(hs.entropy[head]),
                            float(hs.max_weight[head]), pos, text))
    return rows


def head_grid(trace, step_index: int, stat: str = "entropy", layers: range | None = None) -> np.ndarray:
    """[len(layers), n_heads] of a per-head statistic ("entropy" or "max_weight") of `layers`
    (default: every layer; only those are read); NaN where not recorded."""
    model = trace.model
    layers = range(int(model["n_layers"])) if layers is None else layers
    grid = np.full((len(layers), int(model["n_heads"])), np.nan)  # [layers, n_heads]
    for row, layer in enumerate(layers):
        hs = head_stats(trace, step_index, layer)
        if hs is not None:
            grid[row] = getattr(hs, stat)
    return grid
