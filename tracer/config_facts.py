"""Architecture facts and parameter counts from a model's config alone, without loading weights.

`config_facts(config)` takes a config as a dict (a `config.json`, a hub id's cached config, or
a GGUF header mapped by `gguf_config`) and returns the same keys `model_info.model_facts` writes
for a loaded model, plus active parameters per token (MoE) and the KV-cache bytes per token.
Pure Python: no torch, no transformers, so `stepscope info CONFIG` answers in well under a second.
"""

from __future__ import annotations

import glob
import json
import os

from .adapters.facts import CHECKED, config_rules
from .errors import ConfigError
from .gguf_header import gguf_config
from .model_info import COMPONENTS

DTYPE_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2, "float8_e4m3fn": 1}

__all__ = ["CHECKED", "ConfigError", "DTYPE_BYTES", "checkpoint_params", "config_facts", "hub_cache_config",
           "kv_cache", "parameter_counts", "read_config", "text_config"]


def _get(c: dict, *keys, default=None):
    for k in keys:
        if c.get(k) is not None:
            return c[k]
    return default


def _int(c: dict, *keys, default=None) -> int:
    value = _get(c, *keys, default=default)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigError(f"config field {keys[0]!r} must be a non-negative integer (got {value!r})")
    return value


def _shape(c: dict) -> dict:
    """The sizes every count needs, with each family's key names and defaults."""
    mt = c.get("model_type", "")
    d = _int(c, "hidden_size", "n_embd", "d_model")
    n_heads = _int(c, "num_attention_heads", "n_head")
    kv = 1 if c.get("multi_query") else _int(c, "num_key_value_heads", "n_kv_heads", default=n_heads)
    if d == 0 or n_heads == 0:
        raise ConfigError("config has no hidden size or no attention heads")
    rules = config_rules(mt)
    ff = _int(c, "intermediate_size", "n_inner", "ffn_dim", default=4 * d)
    return {
        "model_type": mt,
        "d": d,
        "layers": _int(c, "num_hidden_layers", "n_layer", "num_layers"),
        "n_heads": n_heads,
        "kv": kv,
        "d_head": _int(c, "head_dim", default=d // n_heads),
        "ff": ff,
        "vocab": _int(c, "vocab_size"),
        "rules": rules,
        "layernorm": rules.layernorm,
        "tied": bool(c.get("tie_word_embeddings", rules.tied_default)),
    }


# -- parameter counts --------------------------------------------------------------------------
def _attention(c: dict, s: dict) -> int:
    d, h, kv, dh = s["d"], s["n_heads"], s["kv"], s["d_head"]
    if c.get("kv_lora_rank"):  # multi-head latent attention (DeepSeek-V2/V3)
        rope, nope, dv = c["qk_rope_head_dim"], c["qk_nope_head_dim"], c["v_head_dim"]
        r_q, r_kv = c.get("q_lora_rank"), c["kv_lora_rank"]
        q = d * r_q + r_q + r_q * h * (nope + rope) if r_q else d * h * (nope + rope)  # q_a, q_a norm, q_b
        kv_part = d * (r_kv + rope) + r_kv + r_kv * h * (nope + dv)  # kv_a (with the rope key), its norm, kv_b
        return q + kv_part + h * dv * d
    n = d * h * dh * 2 + d * kv * dh * 2  # W_Q, W_O, W_K, W_V
    rules = s["rules"]
    if rules.attention_bias == "all" or (rules.attention_bias == "config" and c.get("attention_bias")):
        n += h * dh + 2 * kv * dh + d  # q, k, v and output biases
    elif rules.attention_bias == "qkv" or (rules.attention_bias == "qkv_config" and c.get("attention_bias")):
        n += h * dh + 2 * kv * dh  # q, k, v biases (o has none)
    if rules.qk_norm == "per_head":
        n += 2 * dh
    if rules.qk_norm == "full":
        n += (h + kv) * dh
    if rules.attention_sinks:
        n += h  # one sink logit per head
    if rules.output_gate:
        n += d * h * dh  # the output gate shares q_proj
    return n


def _linear_attention(c: dict, s: dict) -> int:
    """A gated delta-net layer (Qwen3-Next): projections, short convolution, decay and output norm."""
    hk, dk = c["linear_num_key_heads"], c["linear_key_head_dim"]
    hv, dv = c["linear_num_value_heads"], c["linear_value_head_dim"]
    conv = (2 * hk * dk + hv * dv) * c["linear_conv_kernel_dim"]
    projections = s["d"] * (2 * hk * dk + 2 * hv * dv) + s["d"] * 2 * hv + hv * dv * s["d"]  # qkvz, ba, out
    return projections + conv + 2 * hv + dv  # + dt_bias, A_log, norm


def _dense_mlp(c: dict, s: dict, ff: int) -> int:
    d = s["d"]
    if s["layernorm"]:  # up → act → down, both with a bias
        return 2 * d * ff + ff + d
    return 3 * d * ff + (2 * ff + d if c.get("mlp_bias") else 0)  # gate, up, down


def _moe(c: dict) -> tuple[int, int, int, int] | None:
    """(routed experts, experts per token, expert d_mlp, shared experts' total d_mlp) or None when dense."""
    n = _get(c, "n_routed_experts", "num_local_experts", "num_experts")
    if not n:
        return None
    ff = _get(c, "moe_intermediate_size", "intermediate_size")
    shared = (c.get("n_shared_experts") or 0) * ff + (c.get("shared_expert_intermediate_size") or 0)
    return n, _get(c, "num_experts_per_tok", "num_experts_per_token", default=1), ff, shared


def _is_moe_layer(c: dict, layer: int) -> bool:
    if layer < (c.get("first_k_dense_replace") or 0) or layer in (c.get("mlp_only_layers") or []):
        return False
    step = c.get("moe_layer_freq") or c.get("decoder_sparse_step") or 1
    return (layer + 1) % step == 0 if c.get("decoder_sparse_step") else layer % step == 0


def _layer_mlp(c: dict, s: dict, layer: int) -> tuple[int, int, int]:
    """(MLP params in total, MLP params active per token, router params) for one layer."""
    moe = _moe(c)
    if moe is None or not _is_moe_layer(c, layer):
        n = _dense_mlp(c, s, s["ff"])
        return n, n, 0
    n_exp, k, ff, shared = moe
    d = s["d"]
    expert = 3 * d * ff
    router = n_exp * d
    if s["rules"].expert_biases:
        expert += 2 * ff + d  # gate_up and down biases
        router += n_exp  # router bias
    shared_n = 3 * d * shared if shared else 0
    if c.get("shared_expert_intermediate_size"):
        router += d  # shared_expert_gate [1, d]
    return n_exp * expert + shared_n, k * expert + shared_n, router


def _norm_params(s: dict) -> int:
    return s["d"] * (2 if s["layernorm"] else 1)


def parameter_counts(c: dict) -> dict:
    """Parameters per component (the keys `model_info.parameter_counts` uses) plus `active`."""
    s = _shape(c)
    counts = dict.fromkeys(COMPONENTS, 0)
    embed = s["vocab"] * s["d"]
    counts["embedding"] = embed
    if s["rules"].learned_positions:
        n_pos = _int(c, "n_positions", "max_position_embeddings")
        counts["embedding"] += (n_pos + s["rules"].position_offset) * s["d"]
    counts["lm_head"] = 0 if s["tied"] else embed
    norms_per_layer = s["rules"].norms_per_layer
    active_mlp = router = 0
    for layer in range(s["layers"]):
        total, active, r = _layer_mlp(c, s, layer)
        counts["mlp"] += total
        active_mlp += active
        router += r
    kinds = c.get("layer_types") or []
    n_linear = sum(1 for k in kinds if k == "linear_attention")
    counts["attention"] = _attention(c, s) * (s["layers"] - n_linear) + (_linear_attention(c, s) * n_linear if n_linear else 0)
    counts["norms"] = _norm_params(s) * (norms_per_layer * s["layers"] + 1)
    counts["other"] = router  # MoE routers
    counts["total"] = sum(counts[k] for k in COMPONENTS)
    counts["active"] = counts["total"] - counts["mlp"] + active_mlp
    counts["tied_embeddings"] = s["tied"]
    return counts


# -- KV cache ----------------------------------------------------------------------------------
def kv_cache(c: dict, dtype_bytes: int = 2) -> dict:
    """KV-cache bytes per token, and what the same heads would cost with full multi-head attention."""
    s = _shape(c)
    layers = s["layers"]
    if c.get("kv_lora_rank"):
        per_layer = c["kv_lora_rank"] + c["qk_rope_head_dim"]  # the latent and the shared rope key
        full = s["n_heads"] * (c["qk_rope_head_dim"] + c["qk_nope_head_dim"] + c["v_head_dim"])
        kind = "MLA"
    else:
        per_layer = 2 * s["kv"] * s["d_head"]
        full = 2 * s["n_heads"] * s["d_head"]
        kind = "MHA" if s["kv"] == s["n_heads"] else ("MQA" if s["kv"] == 1 else "GQA")
    kinds = c.get("layer_types") or []
    cached_layers = layers - sum(1 for k in kinds if k == "linear_attention")
    per_token = per_layer * cached_layers * dtype_bytes
    full_token = full * cached_layers * dtype_bytes
    return {
        "kind": kind,
        "bytes_per_token": per_token,
        "mha_bytes_per_token": full_token,
        "saving": 1 - per_token / full_token if full_token else 0.0,
        "dtype_bytes": dtype_bytes,
    }


# -- facts -------------------------------------------------------------------------------------
def text_config(config: dict) -> dict:
    """The language model's config (multimodal configs nest it under `text_config`)."""
    if not isinstance(config, dict):
        raise ConfigError("a config must be a JSON object")
    inner = config.get("text_config")
    return {**inner, "model_type": inner.get("model_type", config.get("model_type"))} if isinstance(inner, dict) else config


def config_facts(config: dict, name: str = "", source: str = "") -> dict:
    """The facts `stepscope info` shows, computed from the config alone."""
    c = text_config(config)
    s = _shape(c)
    moe = _moe(c)
    dtype = str(c.get("torch_dtype") or c.get("dtype") or "bfloat16")
    facts = {
        "name": name or c.get("_name_or_path") or c.get("model_type") or "model",
        "source": source,
        "family": s["model_type"],
        "architecture": (c.get("architectures") or [s["model_type"]])[0],
        "model_type": s["model_type"],
        "n_layers": s["layers"],
        "d_model": s["d"],
        "n_heads": s["n_heads"],
        "n_kv_heads": s["kv"],
        "d_head": c["qk_nope_head_dim"] + c["qk_rope_head_dim"] if c.get("kv_lora_rank") else s["d_head"],  # MLA: q/k heads
        "d_mlp": s["ff"],
        "vocab_size": s["vocab"],
        "n_ctx": _get(c, "max_position_embeddings", "n_positions"),
        "positional": "absolute" if s["rules"].learned_positions else "rotary",
        "norm": "LayerNorm" if s["layernorm"] else "RMSNorm",
        "act": _get(c, "hidden_act", "activation_function"),
        "gated_mlp": not s["layernorm"],
        "sliding_window": c.get("sliding_window"),
        "layer_types": c.get("layer_types"),
        "n_experts": moe[0] if moe else None,
        "experts_per_token": moe[1] if moe else None,
        "params": parameter_counts(c),
        "kv_cache": kv_cache(c, DTYPE_BYTES.get(dtype, 2)),
        "dtype": dtype,
        "from_config": True,
    }
    if c is not config:
        facts["params_note"] = "the language model only (the config's vision/audio towers are not counted)"
    elif s["model_type"] not in CHECKED:
        facts["params_note"] = f"model type {s['model_type'] or '?'!r} is counted with the generic (Llama-style) rules: check against the weights with --load"
    return facts


# -- reading a config --------------------------------------------------------------------------
MAX_CONFIG_BYTES = 4 << 20


def _read_json(path: str) -> dict:
    try:
        if os.path.getsize(path) > MAX_CONFIG_BYTES:
            raise ConfigError(f"{path} is larger than {MAX_CONFIG_BYTES >> 20} MiB: not a config")
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise ConfigError(f"cannot read config {path}: {exc.__class__.__name__}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path} is not a JSON object")
    return data


def checkpoint_params(directory: str) -> int | None:
    """Parameters stored in a model directory's safetensors files, from their headers only (None when none)."""
    files = sorted(glob.glob(os.path.join(glob.escape(directory), "*.safetensors")))
    if not files:
        return None
    total = 0
    for path in files:
        try:
            with open(path, "rb") as f:
                n = int.from_bytes(f.read(8), "little")
                if not 0 < n <= MAX_CONFIG_BYTES * 25:
                    return None
                header = json.loads(f.read(n))
        except (OSError, ValueError, RecursionError):
            return None
        for name, info in header.items():
            if name != "__metadata__" and isinstance(info, dict) and isinstance(info.get("shape"), list):
                count = 1
                for dim in info["shape"]:
                    count *= int(dim)
                total += count
    return total


def hub_cache_config(repo_id: str) -> str | None:
    """Path of `config.json` for `repo_id` in the local Hugging Face cache (never the network)."""
    hub = os.environ.get("HF_HUB_CACHE") or os.path.join(
        os.environ.get("HF_HOME") or os.path.join(os.path.expanduser("~"), ".cache", "huggingface"), "hub"
    )
    repo = os.path.join(hub, "models--" + repo_id.replace("/", "--"))
    try:
        with open(os.path.join(repo, "refs", "main"), encoding="ascii") as f:
            path = os.path.join(repo, "snapshots", f.read().strip(), "config.json")
            if os.path.isfile(path):
                return path
    except OSError:
        pass
    found = sorted(glob.glob(os.path.join(glob.escape(repo), "snapshots", "*", "config.json")), key=os.path.getmtime)
    return found[-1] if found else None


def read_config(target: str) -> tuple[dict, str, str | None]:
    """(config dict, display name, weights note) for a config.json, model directory, .gguf or cached hub id."""
    if target.endswith(".gguf") and os.path.isfile(target):
        config, weights = gguf_config(target)
        return config, os.path.splitext(os.path.basename(target))[0], weights
    if os.path.isdir(target):
        path = os.path.join(target, "config.json")
        if not os.path.isfile(path):
            raise ConfigError(f"{target} has no config.json (and is not a trace directory)")
        return _read_json(path), os.path.basename(os.path.normpath(target)), None
    if os.path.isfile(target):
        return _read_json(target), os.path.basename(os.path.dirname(os.path.abspath(target))) or target, None
    cached = hub_cache_config(target) if target.count("/") == 1 and not target.startswith((".", "/", "~")) else None
    if cached is None:
        raise ConfigError(f"{target}: no such file or directory, and no cached config for a hub id of that name (no download is attempted)")
    return _read_json(cached), target, None
