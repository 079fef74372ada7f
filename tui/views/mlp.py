"""Mixture-of-experts routing at one step and layer: which experts a position chose, with what
weight, and the router's full distribution.

Reads `blocks.{L}.mlp.hook_router_probs` [T, n_experts] and `blocks.{L}.mlp.hook_expert_ids`
[T, top_k], one row per position asked for (cached per step file). Either may be missing: ids are
then the top-k of the probabilities, or probabilities are unknown (NaN).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from stepscope.tracer.model_info import renormalises_top_k
from stepscope.tracer.names import block_name, split_block_name
from stepscope.tui.text import escape_for_display
from stepscope.tui.views.cache import cached
from stepscope.tui.views.vocab import tok_text

ROUTER = "mlp.hook_router_probs"
EXPERT_IDS = "mlp.hook_expert_ids"


@dataclass(frozen=True)
class ExpertChoice:
    expert: int
    prob: float  # router probability (NaN when the router was not recorded)
    weight: float  # weight of its output in mlp_out (renormalised over the top-k when the model does)


@dataclass(frozen=True)
class Routing:
    step: int
    layer: int
    position: int  # absolute position of the routed token
    text: str  # escaped token text at that position
    special: bool
    chosen: tuple[ExpertChoice, ...]  # in the router's order (highest probability first)
    probs: np.ndarray | None  # [n_experts] float64 router distribution, None when not recorded
    renormalised: bool | None  # top-k weights renormalised to sum 1 (None: not known)


def is_moe(model: dict) -> bool:
    return bool(model.get("n_experts"))


def is_mlp_name(name: str) -> bool:
    """`blocks.L.mlp.*` and `blocks.L.hook_mlp_out`: the names the MLP pane shows routing for."""
    parts = split_block_name(name)
    return parts is not None and (parts[1].startswith("mlp.") or parts[1] == "hook_mlp_out")


def has_routing(step, layer: int) -> bool:
    return block_name(layer, ROUTER) in step or block_name(layer, EXPERT_IDS) in step


def _row(step, layer: int, rest: str, row: int) -> np.ndarray | None:
    """One position's row of a routing tensor, or None when not recorded."""
    name = block_name(layer, rest)
    if name not in step:
        return None
    return cached(step, ("moe_row", name, row), lambda: np.array(step[name][row]))  # [n_experts] or [top_k]


def routing(trace, step_index: int, layer: int, row: int = -1) -> Routing | None:
    """Routing of one row of the step (default the last, predicting position); None when neither
    routing tensor was recorded at this layer (a dense layer, or not recorded)."""
    step = trace.steps[step_index]
    if not has_routing(step, layer):
        return None
    start, end = step.positions
    row = row % (end - start)
    probs = _row(step, layer, ROUTER, row)  # [n_experts]
    probs = None if probs is None else probs.astype(np.float64)
    ids = _row(step, layer, EXPERT_IDS, row)  # [top_k]
    if ids is None:
        assert probs is not None  # has_routing: one of the two is recorded
        k = int(trace.model.get("experts_per_token") or 1)
        ids = np.argsort(-probs, kind="stable")[:k]  # [top_k]
    expert_ids = [int(e) for e in ids]
    p = [float(probs[e]) if probs is not None else float("nan") for e in expert_ids]
    renorm = renormalises_top_k(trace.model)
    total = sum(p)
    w = [x / total for x in p] if renorm and total > 0 else p
    order = sorted(range(len(expert_ids)), key=lambda i: -p[i] if np.isfinite(p[i]) else i)
    chosen = tuple(ExpertChoice(expert_ids[i], p[i], w[i]) for i in order)
    position = start + row
    tokens = trace.tokens
    token = tokens[position] if position < len(tokens) else {"text": "", "special": False}
    return Routing(step_index, layer, position, escape_for_display(tok_text(token)), bool(token.get("special")),
                   chosen, probs, renorm)


def routings(trace, step_index: int, layer: int, rows: range) -> list[Routing]:
    """Routing of several rows of the step (only those rows are read)."""
    out = [routing(trace, step_index, layer, r) for r in rows]
    return [r for r in out if r is not None]


def format_choices(chosen: tuple[ExpertChoice, ...]) -> str:
    """"e3 (0.41), e1 (0.22)": expert ids with their router probabilities."""
    return ", ".join(f"e{c.expert}" + (f" ({c.prob:.2f})" if np.isfinite(c.prob) else "") for c in chosen)


def compact_choices(chosen: tuple[ExpertChoice, ...] | None) -> str:
    """"e3,e1" for a narrow column (a layer row); "" when there is no routing."""
    return ",".join(f"e{c.expert}" for c in chosen) if chosen else ""


# -- what the MLP detail shows -------------------------------------------------------------------

MAX_POSITIONS = 32  # positions listed per step (the last ones: the predicting position first to show)


@dataclass(frozen=True)
class ExpertBar:
    """One expert of the router's full distribution at the last position, in expert order."""

    expert: int
    prob: float
    chosen: bool
    weight: float | None  # its weight in mlp_out when chosen


@dataclass(frozen=True)
class MlpRouting:
    """The routing the tensor detail shows for an MoE layer's MLP name at a step."""

    step: int
    layer: int
    last: Routing  # the last (predicting) position
    bars: list[ExpertBar]  # every expert (empty when the router probabilities were not recorded)
    positions: list[Routing]  # the last `MAX_POSITIONS` positions of the step, oldest first
    n_positions: int  # T: positions computed by this step
    top_k: int


def router_bars(r: Routing) -> list[ExpertBar]:
    if r.probs is None:
        return []
    weights = {c.expert: c.weight for c in r.chosen}
    return [ExpertBar(e, float(p), e in weights, weights.get(e)) for e, p in enumerate(r.probs)]


def mlp_routing(trace, step_index: int, layer: int, max_positions: int = MAX_POSITIONS) -> MlpRouting | None:
    """Routing of the last position (chosen experts with weights, the full router distribution)
    and of the last `max_positions` positions; None when the layer has no router recorded."""
    last = routing(trace, step_index, layer)
    if last is None:
        return None
    start, end = trace.steps[step_index].positions
    T = end - start
    rows = range(max(0, T - max_positions), T)
    return MlpRouting(step_index, layer, last, router_bars(last), routings(trace, step_index, layer, rows), T,
                      len(last.chosen))


def mlp_routing_for(trace, step_index: int, name: str) -> MlpRouting | None:
    """`mlp_routing` for any `blocks.L.mlp.*` / `hook_mlp_out` name of an MoE model, else None."""
    if not is_moe(trace.model) or not is_mlp_name(name):
        return None
    block = split_block_name(name)
    assert block is not None  # an MLP name is a block's
    return mlp_routing(trace, step_index, block[0])
