"""A GGUF file's header (metadata and tensor shapes) read without touching the weights.

`gguf.GGUFReader` decodes every vocabulary string into arrays (2+ s for SmolLM2); this walks the
header with `struct` and skips arrays, so `stepscope info model.gguf` stays well under a second.
The file is untrusted: every length is checked against the file size before it is used.
"""

from __future__ import annotations

import mmap
import struct
from typing import Any

from .adapters.facts import GGUF_MODEL_TYPES
from .errors import ConfigError
from .inert import inert

_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
_STRING, _ARRAY = 8, 9
MAX_ITEMS = 1 << 24
# GGML file types (llama.cpp's LLAMA_FTYPE) that the header's general.file_type names
FILE_TYPES: dict[Any, str] = {0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 7: "Q8_0", 8: "Q5_0", 9: "Q5_1", 10: "Q2_K", 11: "Q3_K_S",
              12: "Q3_K_M", 13: "Q3_K_L", 14: "Q4_K_S", 15: "Q4_K_M", 16: "Q5_K_S", 17: "Q5_K_M", 18: "Q6_K", 32: "BF16"}


class _Cursor:
    def __init__(self, buf):
        self.buf, self.pos = buf, 0

    def take(self, fmt: str):
        size = struct.calcsize(fmt)
        if self.pos + size > len(self.buf):
            raise ConfigError("GGUF header is truncated")
        value = struct.unpack_from(fmt, self.buf, self.pos)[0]
        self.pos += size
        return value

    def string(self, keep: bool = True) -> str | None:
        n = self.take("<Q")
        if self.pos + n > len(self.buf):
            raise ConfigError("GGUF header is truncated")
        start, self.pos = self.pos, self.pos + n
        return bytes(self.buf[start : self.pos]).decode("utf-8", "replace") if keep else None

    def value(self, kind: int):
        if kind in _SCALARS:
            return self.take(_SCALARS[kind])
        if kind == _STRING:
            return self.string()
        if kind == _ARRAY:
            item, n = self.take("<I"), self.take("<Q")
            if n > MAX_ITEMS:
                raise ConfigError("GGUF header has an implausibly long array")
            if item in _SCALARS:  # skipped: only its length is kept
                self.pos += n * struct.calcsize(_SCALARS[item])
                if self.pos > len(self.buf):
                    raise ConfigError("GGUF header is truncated")
            else:
                for _ in range(n):
                    self.value(item) if item != _STRING else self.string(keep=False)
            return ("array", n)
        raise ConfigError(f"GGUF header has an unknown value type {kind}")


def read_header(path: str) -> tuple[dict, dict[str, tuple[int, ...]]]:
    """(metadata with arrays as ("array", length), tensor name -> shape in GGUF order)."""
    try:
        with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buf:
            c = _Cursor(buf)
            if bytes(buf[:4]) != b"GGUF":
                raise ConfigError(f"{path} is not a GGUF file")
            c.pos = 4
            version, n_tensors, n_kv = c.take("<I"), c.take("<Q"), c.take("<Q")
            if version < 2 or n_tensors > MAX_ITEMS or n_kv > MAX_ITEMS:
                raise ConfigError(f"{path}: unsupported or corrupt GGUF header (version {version})")
            meta: dict = {}
            for _ in range(n_kv):
                key = c.string()
                meta[key] = c.value(c.take("<I"))
            shapes: dict = {}  # name -> shape (c.string() keeps the name)
            for _ in range(n_tensors):
                name = c.string()
                dims = c.take("<I")
                if dims > 8:
                    raise ConfigError(f"{path}: corrupt GGUF tensor entry")
                shapes[name] = tuple(c.take("<Q") for _ in range(dims))
                c.take("<I"), c.take("<Q")  # ggml type, data offset
            return meta, shapes
    except (OSError, ValueError) as exc:
        if isinstance(exc, ConfigError):
            raise
        raise ConfigError(f"cannot read GGUF header of {path}: {exc.__class__.__name__}") from None


def gguf_config(path: str) -> tuple[dict, str]:
    """A transformers-style config dict from the header, and where the weights come from in words."""
    meta, shapes = read_header(path)
    arch = meta.get("general.architecture")
    if not isinstance(arch, str):
        raise ConfigError(f"{path}: GGUF header names no architecture")

    def get(key, default=None):
        return meta.get(f"{arch}.{key}", default)

    tokens = meta.get("tokenizer.ggml.tokens")
    vocab = get("vocab_size") or (tokens[1] if isinstance(tokens, tuple) else None)
    d, heads = get("embedding_length"), get("attention.head_count")
    config = {
        "model_type": GGUF_MODEL_TYPES.get(arch, arch),
        "architectures": [inert(f"{arch} (GGUF: {meta.get('general.name') or 'unnamed'})", 120)],  # untrusted header text
        "hidden_size": d,
        "num_hidden_layers": get("block_count"),
        "num_attention_heads": heads,
        "num_key_value_heads": get("attention.head_count_kv", heads),
        "intermediate_size": get("feed_forward_length"),
        "max_position_embeddings": get("context_length"),
        "vocab_size": vocab,
        "tie_word_embeddings": "output.weight" not in shapes,
        "hidden_act": "silu",
        "rms_norm_eps": get("attention.layer_norm_rms_epsilon"),
        "rope_theta": get("rope.freq_base"),
    }
    if get("attention.key_length"):
        config["head_dim"] = get("attention.key_length")
    if get("expert_count"):
        config.update(num_experts=get("expert_count"), num_experts_per_tok=get("expert_used_count"),
                      moe_intermediate_size=get("expert_feed_forward_length") or get("feed_forward_length"))
    config["gguf_tensor_params"] = sum(_numel(s) for s in shapes.values())
    kind = FILE_TYPES.get(meta.get("general.file_type"), f"type {meta.get('general.file_type')}")
    return config, f"GGUF {kind}, dequantised to float32 when traced"


def _numel(shape: tuple[int, ...]) -> int:
    n = 1
    for s in shape:
        n *= s
    return n
