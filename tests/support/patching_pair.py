"""A clean/corrupted pair of tiny traces whose manifests name a saved model directory (what
`stepscope patch` and the Patching pane load), and a precomputed result that needs no model."""

from __future__ import annotations

import os

import numpy as np

from stepscope.tracer.patch_format import PatchingResult

CLEAN, CORRUPT = "The cat sat", "The dog ran"  # same token length (byte tokenizer), different next tokens


def record_pair(model_dir: str, root: str, max_new_tokens: int = 2) -> tuple[str, str]:
    """(clean dir, corrupt dir) recorded from the model saved in `model_dir`."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from stepscope.tracer.session import GenerationSettings, LiveSession

    model, tok = AutoModelForCausalLM.from_pretrained(model_dir), AutoTokenizer.from_pretrained(model_dir)
    out = []
    for name, prompt in (("clean", CLEAN), ("corrupt", CORRUPT)):
        path = os.path.join(root, name)
        s = LiveSession(model, tok, prompt, GenerationSettings(max_new_tokens=max_new_tokens, chat=False), out=path,
                        name="tiny-llama", source=model_dir)
        s.run()
        s.close()
        out.append(path)
    return out[0], out[1]


def fake_result(clean, corrupt, site: str = "resid_pre", method: str = "patch", step: int = 0) -> PatchingResult:
    """A result shaped like a real sweep of (clean, corrupt), with made-up values (no model needed)."""
    n = clean.prompt_len + step
    layers = int(clean.model["n_layers"])
    width = int(clean.model["n_heads"]) if site == "head" else n
    values = np.linspace(-0.5, 1.0, layers * width).reshape(layers, width)
    return PatchingResult(
        site=site, step=step, method=method, tokens=[t["text"] for t in clean.tokens[:n]],
        corrupt_tokens=[t["text"] for t in corrupt.tokens[:n]], values=values,
        clean_token={"id": int(clean.tokens[n]["id"]), "text": clean.tokens[n]["text"]},
        corrupt_token={"id": int(corrupt.tokens[n]["id"]), "text": corrupt.tokens[n]["text"]},
        clean_metric=2.0, corrupt_metric=-1.0, model=str(clean.model.get("name")), clean=clean.path, corrupt=corrupt.path,
    )
