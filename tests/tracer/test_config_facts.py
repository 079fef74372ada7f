"""Model facts from a config alone: published totals, every tiny family against its real weights, `info` speed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from stepscope.tracer.config_facts import ConfigError, config_facts, hub_cache_config, read_config
from tests.support.paths import ROOT

# Published config.json values (only the keys that size the model), as the model cards ship them.
PUBLISHED = {
    "gpt2": (
        dict(model_type="gpt2", architectures=["GPT2LMHeadModel"], n_embd=768, n_layer=12, n_head=12,
             n_positions=1024, n_ctx=1024, vocab_size=50257, activation_function="gelu_new"),
        124_439_808,
    ),
    "SmolLM2-135M": (
        dict(model_type="llama", architectures=["LlamaForCausalLM"], hidden_size=576, intermediate_size=1536,
             num_hidden_layers=30, num_attention_heads=9, num_key_value_heads=3, vocab_size=49152,
             max_position_embeddings=8192, tie_word_embeddings=True, hidden_act="silu", torch_dtype="bfloat16"),
        134_515_008,
    ),
    "Meta-Llama-3-8B": (
        dict(model_type="llama", architectures=["LlamaForCausalLM"], hidden_size=4096, intermediate_size=14336,
             num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=8, vocab_size=128256,
             max_position_embeddings=8192, tie_word_embeddings=False, hidden_act="silu", torch_dtype="bfloat16"),
        8_030_261_248,
    ),
    "Qwen2.5-7B": (
        dict(model_type="qwen2", architectures=["Qwen2ForCausalLM"], hidden_size=3584, intermediate_size=18944,
             num_hidden_layers=28, num_attention_heads=28, num_key_value_heads=4, vocab_size=152064,
             max_position_embeddings=131072, tie_word_embeddings=False, hidden_act="silu", torch_dtype="bfloat16"),
        7_615_616_512,
    ),
    "Mistral-7B-v0.1": (
        dict(model_type="mistral", architectures=["MistralForCausalLM"], hidden_size=4096, intermediate_size=14336,
             num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=8, vocab_size=32000,
             max_position_embeddings=32768, sliding_window=4096, tie_word_embeddings=False, hidden_act="silu",
             torch_dtype="bfloat16"),
        7_241_732_096,
    ),
}
DEEPSEEK_V3 = dict(
    model_type="deepseek_v3", architectures=["DeepseekV3ForCausalLM"], hidden_size=7168, intermediate_size=18432,
    moe_intermediate_size=2048, num_hidden_layers=61, num_attention_heads=128, num_key_value_heads=128,
    n_routed_experts=256, n_shared_experts=1, num_experts_per_tok=8, first_k_dense_replace=3, moe_layer_freq=1,
    q_lora_rank=1536, kv_lora_rank=512, qk_nope_head_dim=128, qk_rope_head_dim=64, v_head_dim=128,
    vocab_size=129280, max_position_embeddings=163840, tie_word_embeddings=False, topk_method="noaux_tc",
    num_nextn_predict_layers=1, hidden_act="silu", torch_dtype="bfloat16",
)
MIXTRAL_8X7B = dict(
    model_type="mixtral", hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
    num_key_value_heads=8, num_local_experts=8, num_experts_per_tok=2, vocab_size=32000, tie_word_embeddings=False,
)


@pytest.mark.parametrize("name", list(PUBLISHED))
def test_published_totals(name):
    config, total = PUBLISHED[name]
    params = config_facts(config, name)["params"]
    assert params["total"] == total
    assert params["active"] == total  # dense: every parameter is used for every token


def test_deepseek_v3_total_and_active():
    """671B in total, 37B active per token (the multi-token-prediction module is not counted, as published)."""
    facts = config_facts(DEEPSEEK_V3, "DeepSeek-V3")
    assert round(facts["params"]["total"] / 1e9) == 671
    assert int(facts["params"]["active"] / 1e9) == 37
    assert facts["n_experts"] == 256 and facts["experts_per_token"] == 8 and facts["d_head"] == 192
    kv = facts["kv_cache"]
    assert kv["kind"] == "MLA"
    assert kv["bytes_per_token"] == 61 * (512 + 64) * 2  # latent + shared rope key per layer, bf16
    assert kv["mha_bytes_per_token"] == 61 * 128 * (192 + 128) * 2
    assert kv["saving"] > 0.98


def test_mixtral_active():
    """Mixtral-8x7B: 46.7B total, 12.9B active (two of eight experts per token)."""
    p = config_facts(MIXTRAL_8X7B)["params"]
    assert round(p["total"] / 1e8) == 467 and round(p["active"] / 1e8) == 129


def test_kv_cache_gqa_and_mha():
    llama = config_facts(PUBLISHED["Meta-Llama-3-8B"][0])["kv_cache"]
    assert llama["kind"] == "GQA"
    assert llama["bytes_per_token"] == 2 * 32 * 8 * 128 * 2 == 131072  # K and V, 32 layers, 8 KV heads, bf16
    assert llama["saving"] == pytest.approx(0.75)
    gpt2 = config_facts(PUBLISHED["gpt2"][0])["kv_cache"]
    assert gpt2["kind"] == "MHA" and gpt2["saving"] == 0
    mqa = config_facts({**PUBLISHED["gpt2"][0], "n_head": 12, "multi_query": True, "model_type": "gpt_bigcode"})["kv_cache"]
    assert mqa["kind"] == "MQA" and mqa["saving"] == pytest.approx(11 / 12)


def test_every_tiny_family_matches_its_weights():
    """The count from the config equals the real parameter count of a model built from it, for every family."""
    pytest.importorskip("torch")
    from tests.support.tiny_models import FAMILY_CONFIGS, tiny_model

    for family in FAMILY_CONFIGS:
        model = tiny_model(family)
        real = sum(p.numel() for p in model.parameters())
        counted = config_facts(model.config.to_dict())["params"]
        assert counted["total"] == real, family
        assert counted["embedding"] + counted["lm_head"] == sum(
            p.numel() for n, p in model.named_parameters() if "embed" in n or "wte" in n or "wpe" in n or "lm_head" in n
        ), family


def test_info_on_a_saved_model_directory_matches_its_checkpoint(tmp_path, capsys):
    """A directory with config.json and safetensors: the count from the config equals the headers' total."""
    pytest.importorskip("torch")
    from stepscope.cli.main import main
    from stepscope.tracer.config_facts import checkpoint_params
    from tests.support.tiny_models import tiny_model

    model = tiny_model("qwen3_moe")
    model.save_pretrained(tmp_path / "m")
    real = sum(p.numel() for p in model.parameters())
    assert checkpoint_params(str(tmp_path / "m")) == real
    assert main(["info", str(tmp_path / "m")]) == 0
    out = capsys.readouterr().out
    assert f"{real:,}" in out and "equal to the count" in out


def test_gguf_header_counts_equal_tensor_shapes():
    """The embedded SmolLM2 GGUF: config from the header, weights untouched, totals equal the header's tensors."""
    from stepscope.tracer.gguf_header import gguf_config
    from stepscope.tracer.model_spec import default_gguf_path

    config, weights = gguf_config(default_gguf_path())
    facts = config_facts(config)
    assert facts["params"]["total"] == config["gguf_tensor_params"] == 134_515_008
    assert weights.startswith("GGUF Q4_1")


def test_every_counted_family_is_checked():
    """Each model type the counter claims as checked has a tiny model compared against its weights above."""
    from stepscope.tracer.adapters.facts import CHECKED
    from tests.support.tiny_models import FAMILY_CONFIGS

    assert CHECKED <= {c["model_type"] for c in FAMILY_CONFIGS.values()}
    assert "params_note" in config_facts({**PUBLISHED["SmolLM2-135M"][0], "model_type": "brand_new"})
    assert "params_note" not in config_facts(PUBLISHED["SmolLM2-135M"][0])
    nested = config_facts({"model_type": "llava", "text_config": PUBLISHED["Meta-Llama-3-8B"][0], "vision_config": {}})
    assert nested["params"]["total"] == PUBLISHED["Meta-Llama-3-8B"][1] and "language model only" in nested["params_note"]


def test_bad_configs_one_line(tmp_path):
    (tmp_path / "config.json").write_text("[1, 2]")
    with pytest.raises(ConfigError):
        read_config(str(tmp_path))
    with pytest.raises(ConfigError):
        config_facts({"model_type": "llama", "hidden_size": "big", "num_attention_heads": 4})
    (tmp_path / "x.gguf").write_bytes(b"GGUF\x03\x00\x00\x00" + b"\xff" * 16)
    with pytest.raises(ConfigError):
        read_config(str(tmp_path / "x.gguf"))


def _gguf(meta: dict) -> bytes:
    """A minimal GGUF v3 header (no tensors): strings and uint32 values."""
    import struct

    def string(x: str) -> bytes:
        raw = x.encode()
        return struct.pack("<Q", len(raw)) + raw

    body = b"".join(string(k) + (struct.pack("<I", 8) + string(v) if isinstance(v, str) else struct.pack("<II", 4, v)) for k, v in meta.items())
    return b"GGUF" + struct.pack("<IQQ", 3, 0, len(meta)) + body


def test_hostile_gguf_header_reaches_the_terminal_inert(tmp_path, capsys):
    from stepscope.cli.main import main

    path = tmp_path / "evil.gguf"
    path.write_bytes(_gguf({"general.architecture": "llama", "general.name": "\x1b]0;pwned\x07\x1b[2J[bold]x",
                            "llama.block_count": 2, "llama.embedding_length": 64, "llama.attention.head_count": 4,
                            "llama.feed_forward_length": 128, "llama.vocab_size": 100, "general.file_type": 3}))
    assert main(["info", str(path)]) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\x07" not in out
    assert "\\x1b" in out and "GGUF Q4_1" in out


def test_hub_id_from_cache_only(tmp_path, monkeypatch):
    snap = tmp_path / "models--org--tiny" / "snapshots" / "abc"
    snap.mkdir(parents=True)
    (snap / "config.json").write_text(json.dumps(PUBLISHED["SmolLM2-135M"][0]))
    (tmp_path / "models--org--tiny" / "refs").mkdir()
    (tmp_path / "models--org--tiny" / "refs" / "main").write_text("abc")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    assert hub_cache_config("org/tiny") == str(snap / "config.json")
    config, name, _ = read_config("org/tiny")
    assert name == "org/tiny" and config["hidden_size"] == 576
    with pytest.raises(ConfigError, match="no download"):
        read_config("org/absent")


def _info(*args, env=None):
    env = {**os.environ, "PYTHONPATH": ROOT, "COLUMNS": "200", **(env or {})}
    t0 = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "stepscope", "info", *args], capture_output=True, text=True, env=env, timeout=60)
    return done, time.perf_counter() - t0


@pytest.mark.parametrize("name", [*PUBLISHED, "DeepSeek-V3"])
def test_info_on_a_config_is_fast(tmp_path, name):
    """`stepscope info config.json` prints the totals in under a second (no weights, no torch)."""
    config = DEEPSEEK_V3 if name == "DeepSeek-V3" else PUBLISHED[name][0]
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    done, seconds = _info(str(path))
    assert done.returncode == 0, done.stderr
    total = config_facts(config)["params"]["total"]
    assert f"{total:,}" in done.stdout
    assert "KV cache" in done.stdout
    if name == "DeepSeek-V3":
        assert "active per token" in done.stdout and "MLA" in done.stdout
    assert seconds < 1.0 + 0.5 * bool(os.environ.get("CI")), f"{seconds:.2f} s"


def test_info_default_model_reads_the_gguf_header():
    done, seconds = _info()
    assert done.returncode == 0, done.stderr
    assert "134,515,008" in done.stdout and "GGUF Q4_1" in done.stdout
    assert seconds < 1.5
