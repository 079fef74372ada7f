"""Expert parallelism: `torchrun --nproc-per-node 2 -m stepscope trace --tensor-parallel` on tiny mixtures
of experts (gloo, two CPU ranks) holds half the experts on each rank and records the same trace as one
process: the same tokens, the same names and shapes (router probabilities and chosen experts
included, whole tensors), every value within 1e-4 relative; so does every dense family with a
tensor-parallel plan, traced in the same run. A mixture of experts that cannot be split is refused
with one line."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
from transformers import AutoConfig

from stepscope.cli.main import main
from stepscope.tracer import load_trace
from stepscope.tracer.distributed import TensorParallelError, check_shardable
from tests.support.tiny_models import byte_tokenizer, tiny_model
from tests.tracer.test_tensor_parallel import assert_same_trace, trace_args

# every mixture-of-experts family with an adapter, each with 4 experts (2 per rank):
# qwen3_moe with a dense first layer (its MLP split by tensor parallelism, the experts by expert
# parallelism), gpt_oss whose attention transformers keeps whole, deepseek_v3's MLA and shared
# expert, qwen3_next's linear-attention layer
FAMILIES = {
    "mixtral": {},
    "qwen3_moe": {"mlp_only_layers": [0]},
    "gpt_oss": {},
    "deepseek_v3": {},
    "qwen3_next": {},
}
# the dense families with a tensor-parallel plan, in the same run (Llama: tests/tracer/test_tensor_parallel.py);
# Qwen3's and Gemma 3's per-head q/k norms follow a split projection (their heads are joined too)
DENSE = {family: {} for family in ("mistral", "qwen2", "qwen3", "phi3", "gemma2", "gemma3", "gpt_neox",
                                   "gpt_neox_sequential", "olmo2", "smollm3", "glm4", "starcoder2")}
SCRIPT = os.path.join(os.path.dirname(__file__), "..", "support", "ep_traces.py")


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory):
    """Every family traced under one torchrun of two ranks: (models, their traces, the result)."""
    root = tmp_path_factory.mktemp("ep")
    models, traces, args = {}, {}, []
    for family, overrides in {**FAMILIES, **DENSE}.items():
        models[family] = str(root / family)
        tiny_model(family, **overrides).save_pretrained(models[family])
        byte_tokenizer().save_pretrained(models[family])
        traces[family] = root / f"{family}-ep"
        args += [*trace_args(models[family], traces[family], "--tensor-parallel"), "--"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": "", "PYTHONWARNINGS": "ignore"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", SCRIPT, *args[:-1]]
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=240)
    return models, traces, result


def test_each_rank_holds_half_the_experts(two_ranks):
    _, _, result = two_ranks
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("experts: 2 of 4") == 2 * len(FAMILIES)  # both ranks, every family
    assert result.stdout.count("experts: none") == 2 * len(DENSE)
    assert result.stdout.count("trace: ") == len(FAMILIES) + len(DENSE)  # rank 0 alone prints the summary


@pytest.mark.parametrize("family", [*FAMILIES, *DENSE])
def test_two_ranks_record_the_single_process_trace(two_ranks, family, tmp_path):
    models, traces, result = two_ranks
    assert result.returncode == 0, result.stderr[-3000:]
    assert main(trace_args(models[family], tmp_path / "one")) == 0
    got, want = load_trace(str(traces[family])), load_trace(str(tmp_path / "one"))
    assert_same_trace(got, want)
    if family in DENSE:
        return
    for step in (got.steps[0], got.steps[-1]):  # the routing of every token, whole: all 4 experts' probabilities
        probs, ids = step["blocks.1.mlp.hook_router_probs"], step["blocks.1.mlp.hook_expert_ids"]
        assert probs.shape == (ids.shape[0], 4) and ids.shape[1] == 2


def test_the_same_trace_reads_the_experts_of_both_ranks(two_ranks):
    """The prefill routes tokens to experts held by each of the two ranks (experts 0-1 and 2-3),
    so the equality above covers outputs summed across ranks."""
    _, traces, _ = two_ranks
    trace = load_trace(str(traces["mixtral"]))
    ids = np.concatenate([np.asarray(trace.steps[0][f"blocks.{i}.mlp.hook_expert_ids"]).ravel() for i in (0, 1)])
    assert (ids < 2).any() and (ids >= 2).any()


def test_a_mixture_of_experts_without_an_expert_plan_is_refused():
    """A config that turns experts on where transformers has a tensor-parallel plan but no expert-parallel one."""
    config = AutoConfig.for_model("doge", is_moe=True, num_experts=4, num_experts_per_tok=2, hidden_size=64,
                                  num_attention_heads=4, num_key_value_heads=2)
    with pytest.raises(TensorParallelError) as caught:
        check_shardable(config, 2)
    assert str(caught.value) == ("doge is a mixture of experts (4 experts) and transformers has no "
                                 "expert-parallel plan for it: it cannot be sharded")
    check_shardable(AutoConfig.for_model("doge", hidden_size=64, num_attention_heads=4, num_key_value_heads=2), 2)


def test_experts_that_do_not_divide_are_refused():
    with pytest.raises(TensorParallelError) as caught:
        check_shardable(tiny_model("mixtral", num_local_experts=3).config, 2)
    assert str(caught.value) == "the model's 3 experts do not divide by the 2 ranks: use a rank count that divides 3"
