"""The logit lens at view time: top-k of softmax(unembed(ln_final(resid_post_L))) per layer, in numpy.

The tracer stores the final norm's weights and the unembedding once per trace (`lens.safetensors`)
and the norm's facts in the manifest (`model.lens`); each step holds the residual rows the lens
reads (`blocks.{L}.hook_resid_post`, or `logit_lens.resid` when those are not recorded). The
reader computes a step's lens on first use instead of the tracer computing it on every step.

The same file may hold each layer's W_O (`blocks.{L}.attn.W_O` [n_heads, d_head, d_model]): the
reader then computes `attn.hook_result` from the recorded `attn.hook_o_input` row (`head_result`)
instead of the tracer reading every W_O again on every step.

    lens = LogitLens.open(trace_dir, manifest["model"]["lens"])
    ids, probs = lens.top_k(lens.rows(step))          # [n_layers, k] each

Torch-free: the TUI's reading path never imports torch.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable

import numpy as np

from .safetensors_read import load_safetensors_file
from .trace_format import LENS_FILE

RESID_ROWS = "logit_lens.resid"  # [n_layers, d_model] last-position rows, when resid_post is not recorded
NORM_W, NORM_B, W_U, B_U = "ln_final.w", "ln_final.b", "unembed.W_U", "unembed.b_U"
W_O_NAME = re.compile(r"blocks\.(\d{1,6})\.attn\.W_O\Z")
TRANSPOSED = "_T"  # `X_T` is X stored in the model's own layout: W_U_T [vocab, d_model], W_O_T [d_model, n_heads, d_head]


def stored_layout(name: str, shape: tuple, contiguous_if) -> tuple[str, tuple[int, ...]] | None:
    """For the tracer: (stored name, axis order) when W_U or W_O is cheaper to store transposed,
    i.e. `contiguous_if(order)` says the permuted view is contiguous (the model's own layout: no copy)."""
    order = (1, 0) if name == W_U else (2, 0, 1) if W_O_NAME.match(name) and len(shape) == 3 else None
    return (name + TRANSPOSED, order) if order is not None and contiguous_if(order) else None


def canonical(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The lens file's arrays under their canonical names and shapes (transposed views of any
    `X_T`): W_U [d_model, vocab], blocks.{L}.attn.W_O [n_heads, d_head, d_model]."""
    out = dict(arrays)
    for name, a in arrays.items():
        if not name.endswith(TRANSPOSED):
            continue
        base = name[: -len(TRANSPOSED)]
        if base == W_U and a.ndim == 2:
            out.setdefault(base, a.T)
        elif W_O_NAME.match(base) and a.ndim == 3:
            out.setdefault(base, a.transpose(1, 2, 0))
    return out


class LogitLens:
    """Final norm + unembedding of one trace, applied to residual rows."""

    def __init__(self, facts: dict, arrays: dict[str, np.ndarray]):
        arrays = canonical(arrays)
        self.norm: str = facts["norm"]  # "rmsnorm" | "layernorm"
        self.eps = float(facts["eps"])
        self.offset = float(facts.get("weight_offset") or 0.0)  # Gemma: the weight is 1 + w
        self.softcap = facts.get("softcap")
        self.k = int(facts.get("k") or 10)
        self.n_layers = int(facts["n_layers"])
        self.w = np.asarray(arrays[NORM_W], dtype=np.float32)  # [d_model]
        self.b = np.asarray(arrays[NORM_B], dtype=np.float32) if NORM_B in arrays else None  # [d_model]
        self.w_u = arrays[W_U]  # [d_model, vocab]
        self.b_u = np.asarray(arrays[B_U], dtype=np.float32) if B_U in arrays else None  # [vocab]
        self.w_o: dict[int, np.ndarray] = {}  # layer -> W_O [n_heads, d_head, d_model]
        for name, a in arrays.items():
            m = W_O_NAME.match(name)
            if m and a.ndim == 3:
                self.w_o[int(m.group(1))] = a

    def head_result(self, layer: int, o_input: np.ndarray) -> np.ndarray | None:
        """`attn.hook_result` [n_heads, d_model] (float32): each head's row of the output projection's
        input [n_heads, d_head] times its W_O; None when the file has no W_O for the layer or the
        shapes disagree."""
        w = self.w_o.get(layer)
        if w is None or o_input.shape != w.shape[:2]:
            return None
        z = np.asarray(o_input, dtype=np.float32)[:, None, :]  # [n_heads, 1, d_head]
        return np.matmul(z, np.asarray(w, dtype=np.float32))[:, 0, :]  # [n_heads, d_model]

    @classmethod
    def open(cls, trace_dir: str, facts: dict | None, read: Callable[[str], dict] | None = None) -> LogitLens | None:
        """The lens of a trace directory, None when the trace has none (`read` loads a safetensors file)."""
        if not facts:
            return None
        return cls(facts, (read or load_safetensors_file)(os.path.join(trace_dir, facts.get("file", LENS_FILE))))

    def rows(self, step) -> np.ndarray:
        """[n_layers, d_model]: each layer's resid_post at the step's last position."""
        if RESID_ROWS in step:
            return np.asarray(step[RESID_ROWS], dtype=np.float32)
        return np.stack([np.asarray(step[f"blocks.{i}.hook_resid_post"][-1], dtype=np.float32) for i in range(self.n_layers)])

    def has_rows(self, step) -> bool:
        """Whether the step holds what `rows` reads."""
        return RESID_ROWS in step or all(f"blocks.{i}.hook_resid_post" in step for i in range(self.n_layers))

    def logits(self, rows: np.ndarray) -> np.ndarray:
        """[n, d_model] residual rows -> [n, vocab] float32 logits through the final norm and the unembedding."""
        x = rows.astype(np.float32)
        if self.norm == "layernorm":
            x = x - x.mean(-1, keepdims=True)
        x = x / np.sqrt((x * x).mean(-1, keepdims=True) + np.float32(self.eps))  # hook_normalized
        x = x * (self.w + np.float32(self.offset))
        if self.b is not None:
            x = x + self.b
        logits = x @ np.asarray(self.w_u, dtype=np.float32)  # [n, vocab]
        if self.b_u is not None:
            logits = logits + self.b_u
        if self.softcap:
            logits = np.tanh(logits / np.float32(self.softcap)) * np.float32(self.softcap)
        return logits

    def top_k(self, rows: np.ndarray, k: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(ids int64 [n, k], probs float32 [n, k]) of softmax(logits), most probable first."""
        logits = self.logits(rows)  # [n, vocab] float32
        k = min(k or self.k, logits.shape[-1])
        part = np.argpartition(logits, logits.shape[-1] - k, axis=-1)[:, -k:]  # [n, k] the k largest, unordered
        top = np.take_along_axis(logits, part, -1).astype(np.float64)  # [n, k]
        peak = logits.max(-1, keepdims=True)  # [n, 1]
        total = np.exp(logits - peak).sum(-1, keepdims=True, dtype=np.float64)  # [n, 1] softmax denominators
        probs = np.exp(top - peak) / total  # [n, k]
        order = np.argsort(-probs, axis=-1, kind="stable")
        ids = np.take_along_axis(part, order, -1)
        return ids.astype(np.int64), np.take_along_axis(probs, order, -1).astype(np.float32)

    def token_stats(self, rows: np.ndarray, token_ids) -> tuple[np.ndarray, np.ndarray]:
        """Exact (probs float64 [n, m], ranks int64 [n, m]) of the tokens `token_ids` [m] in each row's
        softmax(logits) over the whole vocabulary; rank 1 = the largest logit (1 + the number of
        strictly larger logits)."""
        ids = np.atleast_1d(np.asarray(token_ids, dtype=np.int64))  # [m]
        logits = self.logits(rows).astype(np.float64)  # [n, vocab]
        if ids.size and (ids.min() < 0 or ids.max() >= logits.shape[-1]):
            raise IndexError(f"token ids outside 0..{logits.shape[-1] - 1}")
        peak = logits.max(-1, keepdims=True)  # [n, 1]
        total = np.exp(logits - peak).sum(-1, keepdims=True)  # [n, 1]
        picked = logits[:, ids]  # [n, m]
        probs = np.exp(picked - peak) / total  # [n, m]
        ranks = 1 + (logits[:, None, :] > picked[:, :, None]).sum(-1)  # [n, m]
        return probs, ranks.astype(np.int64)

    def for_step(self, step) -> dict[str, np.ndarray]:
        """{"logit_lens.ids", "logit_lens.probs"} of a step, as the tracer used to store them."""
        ids, probs = self.top_k(self.rows(step))
        return {"logit_lens.ids": ids, "logit_lens.probs": probs}
