"""Loading a model and tokenizer: the embedded default, a `.gguf` file, a local directory or a hub id.

A GGUF file is dequantised by transformers on first use and cached as a safetensors checkpoint
under `$XDG_CACHE_HOME/stepscope/models/` (default `~/.cache/stepscope/models/`), so later
starts load in about a second.
"""

from __future__ import annotations

import hashlib
import os
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlparse

import torch
from huggingface_hub import constants as hf_constants
from huggingface_hub import try_to_load_from_cache
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

from .distributed import TensorParallelError, check_shardable
from .expert_parallel import distributed_config
from .model_spec import DEFAULT_MODEL, DEFAULT_NAME, ModelLoadError, check_spec, default_alias, default_gguf_path

Progress = Callable[[str, "float | None"], None]


@dataclass
class LoadedModel:
    model: torch.nn.Module
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
    model.hf_quantizer = None  # type: ignore[assignment]  # torch types module attributes as Tensor | Module
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.is_quantized = False  # type: ignore[assignment]  # (same)
    progress("caching as safetensors", 0.7)
    tmp = f"{target}.tmp-{os.getpid()}"
    os.makedirs(tmp, exist_ok=True)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    os.replace(tmp, target)


def _from_pretrained(source: str, device: str, dtype, device_map: str | None, tp_size: int = 0):
    kwargs = {"dtype": dtype}
    if tp_size:  # sharded over torchrun's ranks by transformers, each rank on its own device
        config = AutoConfig.from_pretrained(source)
        check_shardable(config, tp_size)
        kwargs["distributed_config"] = distributed_config(config, tp_size)
    elif device_map:
        kwargs["device_map"] = device_map
    tokenizer = AutoTokenizer.from_pretrained(source)
    model = AutoModelForCausalLM.from_pretrained(source, **kwargs)
    if not device_map and not tp_size:
        model.to(device)  # type: ignore[arg-type]  # transformers' stubs wrap `to` with a self-typed decorator
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
    """Refuse at once what `load_model` would refuse before loading: the device, the dtype, a missing
    path, a hub id that is neither in the local cache nor reachable (no network wait)."""
    resolve_device(device)
    resolve_dtype(dtype)
    check_spec(spec)
    check_hub_id(spec)


HUB_PROBE_SECONDS = 2.0


def hub_offline() -> bool:
    """HF_HUB_OFFLINE / TRANSFORMERS_OFFLINE, read now (huggingface_hub reads them at import)."""
    truthy = ("1", "ON", "YES", "TRUE")
    return bool(hf_constants.HF_HUB_OFFLINE) or any(
        os.environ.get(k, "").upper() in truthy for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def hub_reachable(timeout: float = HUB_PROBE_SECONDS) -> bool:
    """A TCP connection to the hub's endpoint opens within `timeout` seconds (name lookup included)."""
    url = urlparse(hf_constants.ENDPOINT)
    host, port = url.hostname or "huggingface.co", url.port or (443 if url.scheme != "http" else 80)
    result: list[bool] = []

    def probe() -> None:
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            result.append(True)
        except OSError:
            result.append(False)

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(timeout)
    return bool(result and result[0])


def check_hub_id(spec: str | None) -> None:
    """ModelLoadError for a spec that can only be a hub id (not the embedded model, a .gguf or a
    directory) when it is not in the local Hugging Face cache and the hub is offline or unreachable."""
    if spec is None or default_alias(spec) or spec.endswith(".gguf") or os.path.isdir(spec):
        return
    try:
        cached = try_to_load_from_cache(spec, "config.json")
    except ValueError:  # not a valid repo id either
        raise ModelLoadError(f"no such model: {spec!r} is not a model directory, a .gguf file or a hub id") from None
    if isinstance(cached, str):
        return
    if hub_offline():
        raise ModelLoadError(f"cannot load model {spec!r}: it is not in the local Hugging Face cache and the hub is offline (HF_HUB_OFFLINE)")
    if not hub_reachable():
        raise ModelLoadError(f"cannot load model {spec!r}: it is not in the local Hugging Face cache and {hf_constants.ENDPOINT} cannot be reached")
