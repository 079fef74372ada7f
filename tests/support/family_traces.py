"""Tiny traces of the model families for the TUI tests: the family matrix's tiny models and
prompt (family_matrix.py), traced greedily without the recomputation checks."""

from __future__ import annotations

import warnings

from stepscope.tracer import load_trace
from stepscope.tracer.session import GenerationSettings, LiveSession
from tests.support.family_matrix import NEW_TOKENS, PROMPT
from tests.support.tiny_models import byte_tokenizer, tiny_model


def trace_tiny(key: str, out, record: list[str] | None = None, **config) -> object:
    """Trace PROMPT (8 byte tokens) + NEW_TOKENS greedy steps of the tiny `key` model into `out`
    (only the `record` patterns when given; `config` overrides the tiny model's config)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the generic fallback's notice
        session = LiveSession(tiny_model(key, **config), byte_tokenizer(), PROMPT, GenerationSettings(max_new_tokens=NEW_TOKENS),
                              out=str(out), record=record, name=f"tiny-{key}")
        while session.step() is not None:
            pass
        session.close()
    return load_trace(str(out))


class Traces:
    """Each family traced once, on first use, under one temporary directory."""

    def __init__(self, root):
        self.root, self._traces = root, {}

    def __getitem__(self, key: str):
        if key not in self._traces:
            self._traces[key] = trace_tiny(key, self.root / key)
        return self._traces[key]
