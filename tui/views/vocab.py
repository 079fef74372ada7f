"""Token id -> (text, special) for ids the trace shows (candidates, logit lens).

A trace stores the text of its prompt and chosen tokens only. Other ids are looked up, in order,
in the manifest tokens, then a `tokenizer.json` saved in the trace directory (read with the
`tokenizers` library when installed, never torch), else shown as `⟨id⟩`. A token holding part of
a UTF-8 character keeps its bytes (`tui.text.token_text`), so it shows as `<0xC2>`, not `�`.
"""

from __future__ import annotations

import weakref

from stepscope.tracer.tokenizer_file import trace_tokenizer
from stepscope.tui.text import escape_for_display, token_text

_TABLES: weakref.WeakKeyDictionary[object, TokenTexts] = weakref.WeakKeyDictionary()


class TokenTexts:
    """Lookup table for one trace; grows as a live trace gains tokens."""

    def __init__(self, trace):
        self._trace = trace
        self._known: dict[int, tuple[str, bool]] = {}
        self._first: dict[int, int] = {}  # token id -> position of its first token in the trace
        self._fallback: dict[int, tuple[str, bool]] = {}
        self._seen_tokens = 0
        tok = trace.manifest.get("tokenizer") or {}
        self._special = set(tok.get("special_ids") or [])
        self._tokenizer = None
        self._tokenizer_tried = False
        self._labels: list[str] = []  # escaped text of each trace position, filled on demand

    def label(self, position: int) -> str:
        """The escaped display text of the token at a trace position (cached; tokens never change)."""
        tokens = self._trace.tokens
        if position >= len(self._labels):
            self._labels.extend([None] * (len(tokens) - len(self._labels)))  # type: ignore[list-item]
        hit = self._labels[position]
        if hit is None:
            hit = self._labels[position] = escape_for_display(tok_text(tokens[position]))
        return hit

    def _sync(self) -> None:
        """Where each id first occurs (its text is made when the id is asked for)."""
        tokens = self._trace.tokens
        first = self._first
        for i in range(self._seen_tokens, len(tokens)):
            token_id = int(tokens[i]["id"])
            if token_id not in first:
                first[token_id] = i
                self._fallback.pop(token_id, None)  # a token that joins the trace replaces the fallback
        self._seen_tokens = len(tokens)

    def _decode(self, token_id: int) -> str | None:
        if not self._tokenizer_tried:
            self._tokenizer_tried = True
            self._tokenizer = trace_tokenizer(self._trace.path)  # None: an unreadable file only costs the text
        if self._tokenizer is None:
            return None
        try:
            return token_text(self._tokenizer.decode([token_id], skip_special_tokens=False),
                              self._tokenizer.id_to_token(token_id))
        except Exception:
            return None

    def __call__(self, token_id: int) -> tuple[str, bool]:
        token_id = int(token_id)
        if len(self._trace.tokens) != self._seen_tokens:
            self._sync()
        hit = self._known.get(token_id)
        if hit is None and token_id in self._first:
            tok = self._trace.tokens[self._first[token_id]]
            hit = self._known[token_id] = (tok_text(tok), bool(tok.get("special")))
        hit = hit or self._fallback.get(token_id)
        if hit is None:
            text = self._decode(token_id)
            if text is not None:
                hit = self._known[token_id] = (text, token_id in self._special)
            else:  # kept apart so a token that later joins the trace replaces it
                hit = self._fallback[token_id] = (f"⟨{token_id}⟩", token_id in self._special)
        return hit


def tok_text(token: dict) -> str:
    """The display text of a manifest token entry (`text`, with `piece` for partial bytes)."""
    text = token.get("text")
    text = text if isinstance(text, str) else ("" if text is None else str(text))
    piece = token.get("piece")
    return token_text(text, piece if isinstance(piece, str) else None)


def token_texts(trace) -> TokenTexts:
    """The shared lookup table of a trace."""
    table = _TABLES.get(trace)
    if table is None:
        table = _TABLES[trace] = TokenTexts(trace)
    return table
