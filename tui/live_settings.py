"""Live sampler settings and token limit, typed as `key=value` pairs (pure: no Textual, no torch).

    temperature=0.7 top_k=40 top_p=0.9 min_p=0.05 seed=1 sample=on max_new_tokens=64
    (aliases: T, k, p, min-p, tokens / limit; sample=on|off; any subset, in any order)

`parse_settings(text, current)` returns the changes (validated against the current values, so the
result is a valid sampler); `settings_text(current)` is the line the dialog starts from.
"""

from __future__ import annotations

import math

KEYS = {
    "temperature": "temperature", "t": "temperature", "temp": "temperature",
    "top_k": "top_k", "top-k": "top_k", "k": "top_k", "topk": "top_k",
    "top_p": "top_p", "top-p": "top_p", "p": "top_p", "topp": "top_p",
    "min_p": "min_p", "min-p": "min_p", "minp": "min_p",
    "seed": "seed",
    "sample": "do_sample", "do_sample": "do_sample", "sampling": "do_sample",
    "max_new_tokens": "max_new_tokens", "max-new-tokens": "max_new_tokens", "tokens": "max_new_tokens",
    "limit": "max_new_tokens",
}
SAMPLER_FIELDS = ("do_sample", "temperature", "top_k", "top_p", "min_p", "seed")
_TRUE, _FALSE = {"on", "yes", "true", "1"}, {"off", "no", "false", "0", "greedy"}


class SettingsError(ValueError):
    """Settings text that cannot be applied; the message is one line."""


def current_settings(settings) -> dict:
    """The sampler fields and the token limit of a `GenerationSettings`-like object."""
    return {f: getattr(settings, f) for f in (*SAMPLER_FIELDS, "max_new_tokens") if hasattr(settings, f)}


def session_settings(session) -> dict:
    """(worker, or the UI thread under the session lock) A copy of a live session's sampler settings
    and its token limit."""
    settings = current_settings(session.settings)
    settings["max_new_tokens"] = getattr(session, "max_new_tokens", settings.get("max_new_tokens"))
    return settings


def settings_text(values: dict) -> str:
    """`sample=on temperature=0.8 top_k=0 ...` for the dialog."""
    parts = []
    for key, value in values.items():
        if key == "do_sample":
            parts.append(f"sample={'on' if value else 'off'}")
        else:
            parts.append(f"{key}={value:g}" if isinstance(value, float) else f"{key}={value}")
    return " ".join(parts)


def parse_settings(text: str, current: dict) -> dict:
    """The changed fields of `text` (only those that differ from `current`); SettingsError if invalid.
    Setting temperature/top-k/top-p/min-p without `sample=` turns sampling on."""
    changes: dict = {}
    for item in text.replace(",", " ").split():
        if "=" not in item:
            raise SettingsError(f"{item!r}: write key=value, e.g. temperature=0.7")
        raw_key, raw = item.split("=", 1)
        key = KEYS.get(raw_key.strip().lower())
        if key is None:
            raise SettingsError(f"unknown setting {raw_key!r}; settings: temperature top_k top_p min_p seed sample "
                                "max_new_tokens")
        changes[key] = _value(key, raw.strip())
    merged = {**current, **changes}
    if "do_sample" not in changes and any(k in changes for k in ("temperature", "top_k", "top_p", "min_p")):
        merged["do_sample"] = changes["do_sample"] = True
    _validate(merged)
    return {k: v for k, v in changes.items() if current.get(k) != v}


def _value(key: str, raw: str):
    if key == "do_sample":
        if raw.lower() in _TRUE:
            return True
        if raw.lower() in _FALSE:
            return False
        raise SettingsError(f"sample takes on or off, not {raw!r}")
    try:
        if key in ("top_k", "seed", "max_new_tokens"):
            return int(raw)
        value = float(raw)
    except ValueError:
        raise SettingsError(f"{key} takes a number, not {raw!r}") from None
    if not math.isfinite(value):
        raise SettingsError(f"{key} takes a finite number")
    return value


def _validate(v: dict) -> None:
    if not v.get("temperature", 1.0) > 0:
        raise SettingsError("temperature must be > 0")
    if v.get("top_k", 0) < 0:
        raise SettingsError("top_k must be >= 0 (0 = off)")
    if not 0 < v.get("top_p", 1.0) <= 1:
        raise SettingsError("top_p must be in (0, 1] (1 = off)")
    if not 0 <= v.get("min_p", 0.0) < 1:
        raise SettingsError("min_p must be in [0, 1) (0 = off)")
    if v.get("seed", 0) < 0:
        raise SettingsError("seed must be >= 0")
    if "max_new_tokens" in v and v["max_new_tokens"] < 1:
        raise SettingsError("max_new_tokens must be >= 1")


def apply_to_session(session, changes: dict) -> dict:
    """(worker, under the session lock) Apply `changes` from the next step on through the
    session's own `update_settings` (validated there; ValueError becomes SettingsError)."""
    try:
        return session.update_settings(**changes)
    except ValueError as exc:
        raise SettingsError(str(exc).splitlines()[0]) from None


__all__ = ["SettingsError", "apply_to_session", "current_settings", "parse_settings", "session_settings", "settings_text"]
