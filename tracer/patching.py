"""Activation patching sweeps and attribution patching on a live model (recording side: torch).

    result = sweep(model, clean, corrupt, site="resid_pre", step=0)              # real patching
    result = sweep(model, clean, corrupt, site="resid_pre", method="attribution")  # first-order estimate

Patching: the corrupted run's tokens go through the model once per group of cells, each batch row with
one activation of the site restored from the clean trace's recorded row (`blocks.L.<name>` at position
p, or head h's z at the last position), at the hook points the interventions edit
(tracer/interventions.py `at_points`). The metric is the logit difference clean token − corrupted token
at the step's predicting position, normalised: (m − m_corrupt) / (m_clean − m_corrupt).

Patching position p changes nothing before p, so the corrupted prefix [0, p) runs once with a KV cache
and each group of cells at p runs only the suffix [p, P) on a copy of that cache, every layer of the
site one batch row. `naive=True` reruns the whole sequence per cell instead (bench/patching.py).

Attribution: one forward and one backward on the corrupted run give d metric / d activation at every
cell; the estimate is (clean − corrupt) · gradient, normalised as above.
"""

from __future__ import annotations

import contextlib
import copy
import time
from typing import cast

import numpy as np
import torch
from transformers import DynamicCache

from .adapters.registry import adapter_for
from .attention import IMPLEMENTATION, register
from .internals import attn_implementation
from .interventions import InterventionError, at_points, hook_point
from .patch_format import Pair, PatchingError, PatchingResult, check_pair, clean_rows
from .session import cache_kwarg

BATCH = 32  # cells per forward


@contextlib.contextmanager
def traced_attention(model):
    """The traced attention (where head outputs can be edited) for the duration; the previous one restored."""
    previous = attn_implementation(model)
    try:
        register()
        if previous != IMPLEMENTATION:
            model.set_attn_implementation(IMPLEMENTATION)
        yield
    finally:
        if previous not in (None, IMPLEMENTATION):
            model.set_attn_implementation(previous)


class _Runner:
    """Forwards of the corrupted sequence with batch rows edited at the site's hook points."""

    def __init__(self, model, pair: Pair, rows: np.ndarray):
        self.model = model
        self.pair = pair
        self.adapter = adapter_for(model)
        self.device: torch.device = cast(torch.Tensor, self.adapter.embed().weight).device
        self.dtype = next(model.parameters()).dtype
        self.rows = torch.as_tensor(rows).to(self.device, self.dtype)  # [layers, P or n_heads, ...]
        self.cache_kw = cache_kwarg(model)
        self.forwards = 0
        for layer in range(pair.n_layers):  # every hook point exists before anything runs
            try:
                hook_point(self.adapter, layer, pair.name)
            except InterventionError as exc:
                raise PatchingError(f"site {pair.site}: {exc}") from None

    def logits(self, ids: list[int], batch: int = 1, cache=None) -> torch.Tensor:
        """[batch, vocab] float64 logits at the last position of `ids` (a suffix after `cache`)."""
        x = torch.tensor([ids], device=self.device).expand(batch, -1)
        kwargs = {self.cache_kw: cache, "use_cache": True} if cache is not None else {"use_cache": False}
        self.forwards += 1
        out = self.model(input_ids=x, **kwargs)
        return out.logits[:, -1].double()

    def metric(self, logits: torch.Tensor) -> torch.Tensor:
        """[batch] logit difference clean token − corrupted token."""
        return logits[:, self.pair.clean_token["id"]] - logits[:, self.pair.corrupt_token["id"]]

    def prefix(self, start: int):
        """A batch-1 cache of the corrupted positions [0, start)."""
        cache = DynamicCache(config=self.model.config)
        self.forwards += 1
        self.model(input_ids=torch.tensor([self.pair.corrupt_ids[:start]], device=self.device), use_cache=True,
                   **{self.cache_kw: cache})
        return cache

    def patched(self, cells: list[tuple[int, int]], start: int, prefix=None) -> torch.Tensor:
        """[len(cells)] metric with cell (layer, column) restored in batch row i; the forward runs positions
        [start, P) after `prefix` (a cache of [0, start)), the edited row being position `start`."""
        by_layer: dict[int, list[tuple[int, int]]] = {}
        for b, (layer, column) in enumerate(cells):
            by_layer.setdefault(layer, []).append((b, column))
        head = self.pair.site == "head"

        def edit(layer, t, view):
            for b, column in by_layer[layer]:
                r = view(b)  # [T, d_model] or [T, n_heads, d_head]
                if head:
                    r[0, column] = self.rows[layer, column]
                else:
                    r[0] = self.rows[layer, column]

        cache = None
        if prefix is not None:
            cache = copy.deepcopy(prefix)
            if len(cells) > 1:
                cache.batch_repeat_interleave(len(cells))
        with at_points(self.adapter, self.pair.name, sorted(by_layer), edit):
            return self.metric(self.logits(self.pair.corrupt_ids[start:], len(cells), cache))

    def patched_full(self, layer: int, column: int, start: int) -> float:
        """The metric with one cell restored, by a forward over the whole sequence (no cache)."""
        head = self.pair.site == "head"

        def edit(_layer, t, view):
            r = view(0)
            if head:
                r[start, column] = self.rows[layer, column]
            else:
                r[start] = self.rows[layer, column]

        with at_points(self.adapter, self.pair.name, [layer], edit):
            return float(self.metric(self.logits(self.pair.corrupt_ids))[0])


def _cells(pair: Pair) -> dict[int, list[tuple[int, int]]]:
    """{start position: [(layer, column)]}: the cells of a sweep grouped by the position they edit."""
    if pair.site == "head":
        return {pair.length - 1: [(layer, h) for layer in range(pair.n_layers) for h in range(pair.n_heads)]}
    return {p: [(layer, p) for layer in range(pair.n_layers)] for p in range(pair.length)}


def _patch(run: _Runner, pair: Pair, values: np.ndarray, progress, batch: int, naive: bool) -> None:
    groups = _cells(pair)
    total, done = sum(len(c) for c in groups.values()), 0
    for start, cells in groups.items():
        if naive:
            for layer, column in cells:  # the whole sequence per cell, the edit at position `start`
                values[layer, column] = float(run.patched_full(layer, column, start))
                done += 1
                if progress:
                    progress(done, total)
            continue
        prefix = run.prefix(start) if start > 0 else None
        for i in range(0, len(cells), batch):
            chunk = cells[i : i + batch]
            m = run.patched(chunk, start, prefix).cpu().numpy()
            for (layer, column), v in zip(chunk, m):
                values[layer, column] = v
            done += len(chunk)
            if progress:
                progress(done, total)


def _attribution(run: _Runner, pair: Pair, values: np.ndarray) -> float:
    """Fill `values` with (clean − corrupt) · d metric / d activation; returns the corrupted metric."""
    corrupt, offsets = {}, {}

    def capture(layer, t, view):
        r = view(0)  # [T, ...] recorded shape
        corrupt[layer] = r.detach().clone()
        offsets[layer] = torch.zeros_like(r, requires_grad=True)
        r.add_(offsets[layer])  # + 0: the metric's gradient with respect to the activation lands here

    layers = list(range(pair.n_layers))
    with torch.enable_grad(), at_points(run.adapter, pair.name, layers, capture):
        m = run.metric(run.logits(pair.corrupt_ids))[0]
        grads = torch.autograd.grad(m, [offsets[layer] for layer in layers], allow_unused=True)
    last = pair.length - 1
    for layer, g in zip(layers, grads):
        g = torch.zeros_like(corrupt[layer]) if g is None else g
        delta = run.rows[layer] - (corrupt[layer][last] if pair.site == "head" else corrupt[layer])  # [P|H, ...]
        grad = g[last] if pair.site == "head" else g
        values[layer] = (delta.double() * grad.double()).reshape(delta.shape[0], -1).sum(-1).cpu().numpy()
    return float(m.detach())


def sweep(model, clean, corrupt, site: str = "resid_pre", step: int = 0, method: str = "patch", progress=None,
          batch: int = BATCH, naive: bool = False) -> PatchingResult:
    """Patch every cell of `site` of the corrupted run with the clean trace's activation (or estimate it:
    method "attribution") and return the normalised metric per cell. `progress(done, total)` after each
    group of cells. PatchingError (one line) for a pair that cannot be swept."""
    if method not in ("patch", "attribution"):
        raise PatchingError(f"unknown method {method!r}: methods are patch, attribution")
    pair = check_pair(clean, corrupt, site, step)
    rows = clean_rows(clean, pair)
    t0 = time.perf_counter()
    model.eval()
    with traced_attention(model), torch.no_grad():
        run = _Runner(model, pair, rows)
        m_clean = float(run.metric(run.logits(pair.clean_ids))[0])
        m_corrupt = float(run.metric(run.logits(pair.corrupt_ids))[0])
        values = np.full((pair.n_layers, pair.columns), np.nan)
        if method == "attribution":
            _attribution(run, pair, values)
            if progress:
                progress(values.size, values.size)
        else:
            _patch(run, pair, values, progress, max(1, batch), naive)
            values -= m_corrupt
        span = m_clean - m_corrupt
        if span == 0:
            raise PatchingError(f"the clean and corrupted runs give the same logit difference at step {step}: nothing to normalise by")
        values /= span
    texts = [str(t.get("text", "")) for t in clean.tokens[: pair.length]]
    corrupt_texts = [str(t.get("text", "")) for t in corrupt.tokens[: pair.length]]
    return PatchingResult(site=site, step=step, method=method, tokens=texts, corrupt_tokens=corrupt_texts, values=values,
                          clean_token=pair.clean_token, corrupt_token=pair.corrupt_token, clean_metric=m_clean,
                          corrupt_metric=m_corrupt, model=str(clean.model.get("name") or ""), clean=str(clean.path),
                          corrupt=str(corrupt.path), seconds=time.perf_counter() - t0,
                          extra={"forwards": run.forwards, "naive": int(naive)})
