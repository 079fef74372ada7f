"""Token text -> token id for watch expressions (`p(" Paris")`): the trace's `tokenizer.json`
(the `tokenizers` library, no torch), else the texts the manifest holds."""

from __future__ import annotations

import weakref

from stepscope.tracer.tokenizer_file import trace_tokenizer
from stepscope.tui.watch.parse import ExprError

_RESOLVERS: weakref.WeakKeyDictionary[object, TokenIds] = weakref.WeakKeyDictionary()


class TokenIds:
    """Resolves token texts of one trace; results are cached."""

    def __init__(self, trace):
        self._trace = trace
        self._cache: dict[str, int] = {}
        self._tokenizer = None
        self._tried = False

    def _load(self):
        if not self._tried:
            self._tried = True
            self._tokenizer = trace_tokenizer(self._trace.path)  # None: the manifest's texts only
        return self._tokenizer

    def __call__(self, text: str) -> int:
        """The id of the single token whose text is `text` (ExprError when there is none)."""
        if text in self._cache:
            return self._cache[text]
        token_id = self._from_manifest(text)
        pieces: list[str] = []
        if token_id is None:
            tok = self._load()
            if tok is not None:
                direct = tok.token_to_id(text)
                ids = [direct] if direct is not None else tok.encode(text, add_special_tokens=False).ids
                if len(ids) == 1:
                    token_id = int(ids[0])
                else:
                    pieces = [tok.id_to_token(i) or "?" for i in ids]
        if token_id is None:
            if len(pieces) > 1:
                raise ExprError(f"{text!r} is {len(pieces)} tokens ({' '.join(pieces)}): give one token or its id")
            raise ExprError(f"{text!r} is not a token this trace knows: give its id instead")
        self._cache[text] = token_id
        return token_id

    def _from_manifest(self, text: str) -> int | None:
        for token in self._trace.tokens:
            if token.get("text") == text:
                return int(token["id"])
        return None


def token_ids(trace) -> TokenIds:
    """The shared resolver of a trace."""
    resolver = _RESOLVERS.get(trace)
    if resolver is None:
        resolver = _RESOLVERS[trace] = TokenIds(trace)
    return resolver
