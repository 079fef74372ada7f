"""A trace's tokenizer.json as a `tokenizers` Tokenizer (no torch, no transformers), read like every
other file of an untrusted trace: through safe_io, size-limited, never by following a link."""

from __future__ import annotations

from tokenizers import Tokenizer

from .safe_io import read_trace_file
from .schema import MAX_TOKENIZER_BYTES
from .trace_format import TOKENIZER_FILE


def trace_tokenizer(trace_dir: str) -> Tokenizer | None:
    """The tokenizer saved in the trace at `trace_dir`; None when it has none or it cannot be read
    (refused, too large, not a tokenizer): callers fall back to the token texts of the manifest."""
    try:
        raw = read_trace_file(trace_dir, TOKENIZER_FILE, MAX_TOKENIZER_BYTES)
        return Tokenizer.from_str(raw.decode("utf-8"))
    except Exception:  # a missing or damaged file only costs the decoding of ids outside the trace
        return None
