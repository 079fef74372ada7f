"""Loading a model and tokenizer: the embedded default, a `.gguf` file, a local directory or a hub id.

A GGUF file is dequantised by transformers on first use and cached as a safetensors checkpoint
under `$XDG_CACHE_HOME/stepscope/models/` (default `~/.cache/stepscope/models/`), so later
starts load in about a second.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass

import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

from .distributed import TensorParallelError, check_shardable
from .model_spec import DEFAULT_MODEL, DEFAULT_NAME, ModelLoadError, check_spec, default_alias, default_gguf_path

Progress = Callable[[str, "float | None"], None]


@dataclass
class LoadedModel:
    model: object
    tokenizer: object
    name: str
    source: str


def cache_root() -> str:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "stepscope", "models")


def _gguf_cache_dir(gguf_path: str) -> str:
    st = os.stat(gguf_path)
    key = hashlib.sha1(f"{os.path.abspath(gguf_path)}|{st.st_size}|{int(st.st_mtime)}".encode()).hexdigest()[:12]
    stem = os.path.splitext(os.path.basename(gguf_path))[0]
    return os.path.join(cache_root(), f"{stem}-{key}")


def resolve_device(device: str) -> str:
    if device in (None, "", "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ModelLoadError(f"device {device!r} requested but CUDA is not available")
        if ":" in device and int(device.split(":")[1]) >= torch.cuda.device_count():
            raise ModelLoadError(f"device {device!r} does not exist ({torch.cuda.device_count()} CUDA devices)")
        return device
    if device == "cpu":
        return device
    raise ModelLoadError(f"unknown device {device!r} (use auto, cpu, cuda or cuda:N)")


def resolve_dtype(dtype: str):
    table = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
    if dtype in (None, "", "auto"):
        return "auto"
    if dtype not in table:
        raise ModelLoadError(f"unknown dtype {dtype!r} (use auto, float32, float16 or bfloat16)")
    return table[dtype]


def _convert_gguf(gguf_path: str, target: str, progress: Progress) -> None:
    """Dequantise a GGUF once into a safetensors checkpoint at `target` (atomic rename)."""
    directory, filename = os.path.split(os.path.abspath(gguf_path))
    progress("reading GGUF tokenizer (first run only)", 0.1)
    tokenizer = AutoTokenizer.from_pretrained(directory, gguf_file=filename)
    progress("dequantising GGUF weights (first run only)", 0.3)
    model = AutoModelForCausalLM.from_pretrained(directory, gguf_file=filename)
    # A GGUF-loaded model refuses save_pretrained while it still carries its quantizer.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.is_quantized = False
    progress("caching as safetensors", 0.7)
    tmp = f"{target}.tmp-{os.getpid()}"
    os.makedirs(tmp, exist_ok=True)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    os.replace(tmp, target)


def _from_pretrained(source: str, device: str, dtype, device_map: str | None, tp_size: int = 0):
    kwargs = {"dtype": dtype}
    if tp_size:  # sharded over torchrun's ranks by transformers, each rank on its own device
        check_shardable(AutoConfig.from_pretrained(source), tp_size)
        kwargs["tp_plan"] = "auto"
    elif device_map:
        kwargs["device_map"] = device_map
    tokenizer = AutoTokenizer.from_pretrained(source)
    model = AutoModelForCausalLM.from_pretrained(source, **kwargs)
    if not device_map and not tp_size:
        model.to(device)
    model.eval()
    return model, tokenizer


def load_model(
    spec: str | None = None,
    device: str = "auto",
    dtype: str = "auto",
    device_map: str | None = None,
    progress: Progress | None = None,
    tp_size: int = 0,
) -> LoadedModel:
    """Load `spec` (None/"smollm2" = embedded default, a .gguf, a directory or a hub id); `tp_size`:
    shard it over that many torchrun ranks (tensor parallelism; TensorParallelError when it cannot be)."""
    if tp_size and device_map:
        raise TensorParallelError("--tensor-parallel and --device-map cannot be combined: tensor parallelism places the shards itself")
    progress = progress or (lambda stage, fraction: None)
    dev = resolve_device(device)
    torch_dtype = resolve_dtype(dtype)
    spec = spec or DEFAULT_MODEL
    check_spec(spec)
    if default_alias(spec):
        gguf, name = default_gguf_path(), DEFAULT_NAME
    elif spec.endswith(".gguf"):
        gguf, name = spec, os.path.splitext(os.path.basename(spec))[0]
    else:
        gguf, name = None, os.path.basename(os.path.normpath(spec)) if os.path.isdir(spec) else spec
    source = spec
    try:
        if gguf is not None:
            source = _gguf_cache_dir(gguf)
            if not os.path.isdir(source):
                _convert_gguf(gguf, source, progress)
        progress(f"loading {name}", 0.8)
        model, tokenizer = _from_pretrained(source, dev, torch_dtype, device_map, tp_size)
    except ModelLoadError:
        raise
    except OSError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else exc.__class__.__name__
        raise ModelLoadError(f"cannot load model {spec!r}: {first}") from None
    except (ValueError, KeyError, RuntimeError, ImportError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else exc.__class__.__name__
        raise ModelLoadError(f"cannot load model {spec!r}: {first}") from None
    progress("model ready", 1.0)
    return LoadedModel(model=model, tokenizer=tokenizer, name=name, source=os.path.abspath(gguf) if gguf else spec)


def check_model_options(spec: str | None, device: str, dtype: str) -> None:
    """Refuse at once what `load_model` would refuse before loading: the device, the dtype, a missing path."""
    resolve_device(device)
    resolve_dtype(dtype)
    check_spec(spec)
