"""Architecture facts, parameter counts per component and tokenizer facts, as plain dicts, and
what a reader makes of a few of them (older traces lack some keys)."""

from __future__ import annotations

import json

from .gguf_header import FILE_TYPES, read_header

COMPONENTS = ("embedding", "attention", "mlp", "norms", "lm_head", "other")


def _component(param_name: str) -> str:
    parts = param_name.split(".")
    leaf_module = parts[-2] if len(parts) > 1 else ""
    if "norm" in leaf_module or leaf_module.startswith("ln"):
        return "norms"
    if any(p in ("embed_tokens", "wte", "wpe", "embed_in", "embed_positions", "embeddings") for p in parts):
        return "embedding"
    if parts[0] in ("lm_head", "embed_out", "output"):
        return "lm_head"
    if any(p in ("self_attn", "attn", "attention", "self_attention") for p in parts):
        return "attention"
    if any(p in ("mlp", "feed_forward", "block_sparse_moe", "experts", "ffn") for p in parts):
        return "mlp"
    return "other"


def parameter_counts(model) -> dict:
    """Parameters per component; a tied LM head counts 0 and sets `tied_embeddings`."""
    counts = dict.fromkeys(COMPONENTS, 0)
    for name, p in model.named_parameters():  # shared (tied) tensors are listed once
        counts[_component(name)] += p.numel()
    counts["total"] = sum(counts[c] for c in COMPONENTS)
    counts["tied_embeddings"] = bool(getattr(model.config, "tie_word_embeddings", False)) and counts["lm_head"] == 0
    return counts


def _jsonable_config(config) -> dict:
    out = {}
    for k, v in config.to_dict().items():
        try:
            json.dumps(v)
            out[k] = v
        except TypeError:
            out[k] = repr(v)
    return out


def model_facts(model, adapter, name: str, source: str) -> dict:
    facts = adapter.facts()
    facts.update(
        name=name,
        source=source,
        architecture=(getattr(model.config, "architectures", None) or [model.__class__.__name__])[0],
        model_type=getattr(model.config, "model_type", None),
        weights=weights_origin(source, model),
        params=parameter_counts(model),
        config=_jsonable_config(model.config),
        not_applicable=adapter.not_applicable(),
        missing_names=adapter.missing_names(),
    )
    return facts


def is_generic_fallback(facts: dict) -> bool:
    """Traced by the generic fallback (`generic_fallback`; older traces: only it wrote `final_norm_found`)."""
    flag = facts.get("generic_fallback")
    return bool(flag) if flag is not None else "final_norm_found" in facts


def renormalises_top_k(facts: dict) -> bool | None:
    """Whether a mixture of experts renormalises the chosen experts' weights to sum 1
    (`norm_topk_prob`), None when the facts do not say."""
    return bool(facts["norm_topk_prob"]) if "norm_topk_prob" in facts else None


def weights_origin(source: str, model) -> str | None:
    """Where the weights came from in words, e.g. "GGUF Q4_1, dequantised to float32"."""
    if not (isinstance(source, str) and source.endswith(".gguf")):
        return None
    try:
        kind = read_header(source)[0].get("general.file_type")
    except ValueError:
        kind = None
    dtype = str(getattr(model, "dtype", "")).replace("torch.", "")
    return f"GGUF {FILE_TYPES.get(kind, 'file')}, dequantised to {dtype}"


def eos_ids(model, tokenizer) -> list[int]:
    ids: set[int] = set()
    for source in (getattr(model, "generation_config", None), model.config):
        value = getattr(source, "eos_token_id", None) if source is not None else None
        if isinstance(value, int):
            ids.add(value)
        elif isinstance(value, (list, tuple)):
            ids.update(int(v) for v in value)
    if getattr(tokenizer, "eos_token_id", None) is not None:
        ids.add(int(tokenizer.eos_token_id))
    return sorted(ids)


def chat_default(tokenizer, model=None) -> bool:
    """An instruct/chat tokenizer: it has a chat template whose turns end with one of the model's
    end-of-sequence tokens (a base model's template, if any, ends turns with a token generation
    does not stop at). The directory's name plays no part."""
    template = getattr(tokenizer, "chat_template", None)
    if isinstance(template, dict):
        template = " ".join(str(t) for t in template.values())
    if not template:
        return False
    ids = eos_ids(model, tokenizer) if model is not None else [getattr(tokenizer, "eos_token_id", None)]
    names = {tokenizer.convert_ids_to_tokens(int(i)) for i in ids if i is not None}
    return any(isinstance(n, str) and n and n in template for n in names)


def tokenizer_facts(model, tokenizer) -> dict:
    return {
        "name": getattr(tokenizer, "name_or_path", "") or tokenizer.__class__.__name__,
        "class": tokenizer.__class__.__name__,
        "vocab_size": len(tokenizer),
        "bos_token_id": getattr(tokenizer, "bos_token_id", None),
        "eos_token_ids": eos_ids(model, tokenizer),
        "special_ids": sorted(int(i) for i in getattr(tokenizer, "all_special_ids", []) or []),
        "chat_template": bool(getattr(tokenizer, "chat_template", None)),
    }
