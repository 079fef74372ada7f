"""The tensor list's `/` filter: which recorded names match what the user typed.

    name_matches("blocks.10.hook_resid_post", "resid post 10")  # every word appears: True
    name_matches("blocks.3.attn.hook_pattern", "blocks.*.attn.hook_p*")  # a glob (has * or ?)
"""

from __future__ import annotations

import fnmatch


def name_matches(name: str, pattern: str) -> bool:
    """Glob when the pattern holds `*` or `?`; else every whitespace-separated word is a substring
    (case-insensitive; a word of digits must be a whole dotted part: `10` matches `blocks.10.` only)."""
    pattern = pattern.strip()
    if not pattern:
        return True
    lowered = name.lower()
    if "*" in pattern or "?" in pattern:
        return fnmatch.fnmatchcase(lowered, pattern.lower())
    parts = lowered.split(".")
    for word in pattern.lower().split():
        if word.isdigit():
            if word not in parts:
                return False
        elif word not in lowered:
            return False
    return True
