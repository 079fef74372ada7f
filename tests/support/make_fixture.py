"""Regenerate the committed fixture trace: `python -m tests.support.make_fixture`.

`tests/fixtures/tiny_trace` is written in the current format (schema 2);
`tests/fixtures/tiny_trace_v1` is a frozen schema-1 copy for compatibility tests: never regenerate it.

A tiny random Llama with GQA (2 layers, 4 query heads over 2 KV heads), a prompt holding a
special token, markup-looking text and a newline, and sampled decoding so the candidate lists
and sampler stages are non-trivial.
"""

from __future__ import annotations

import os
import shutil

from stepscope.tracer.session import GenerationSettings, LiveSession
from tests.support.paths import FIXTURE
from tests.support.tiny_models import byte_tokenizer, tiny_model

PROMPT = "<|im_start|>Hi [red]x[/red]\n"


def make(path: str = FIXTURE, max_new_tokens: int = 8) -> str:
    if os.path.isdir(path):
        shutil.rmtree(path)
    settings = GenerationSettings(do_sample=True, temperature=0.9, top_k=40, top_p=0.9, seed=2, max_new_tokens=max_new_tokens)
    session = LiveSession(tiny_model("llama"), byte_tokenizer(), PROMPT, settings, out=path, name="tiny-llama-gqa")
    while session.step() is not None:
        pass
    session.close()
    return path


if __name__ == "__main__":
    print(make())
