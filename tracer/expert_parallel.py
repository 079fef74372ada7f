"""Expert parallelism: a mixture of experts traced over the ranks of `torchrun`.

Under `--tensor-parallel` a mixture of experts is loaded with transformers' expert-parallel plan
(the config's `base_model_ep_plan`) over the same ranks as its tensor-parallel plan: each rank
holds whole experts (n_experts / ranks of them, `Shard(0)` of the stacked expert weights), the
attention is split as for a dense model, and the router is whole on every rank. Every rank holds
the same tokens, so transformers runs each rank's experts on all of them (routes to another rank's
experts masked) and all-reduces the sum: the MLP's output, like the router's probabilities and
chosen experts, is whole on every rank, and the recorder sees no expert shard.

A mixture of experts whose config has no expert-parallel plan, or whose experts do not divide
by the rank count, is refused with one line (`check_shardable` raises it as TensorParallelError).
"""

from __future__ import annotations

from transformers.distributed import DistributedConfig

MOE_FIELDS = ("num_local_experts", "num_experts", "n_routed_experts", "moe_num_experts")


def expert_count(config) -> int | None:
    """The number of routed experts of a mixture-of-experts config, None for a dense model (also
    one whose config counts experts but switches them off with `is_moe=False`)."""
    if getattr(config, "is_moe", True) is False:
        return None
    return next((int(getattr(config, f)) for f in MOE_FIELDS if getattr(config, f, None)), None)


def expert_refusal(config, size: int) -> str | None:
    """Why the experts of `config` cannot be split over `size` ranks (one line), None when they can
    (or when the model has none)."""
    experts = expert_count(config)
    if experts is None:
        return None
    model_type = getattr(config, "model_type", "?")
    if not getattr(config, "base_model_ep_plan", None):
        return (f"{model_type} is a mixture of experts ({experts} experts) and transformers has no "
                "expert-parallel plan for it: it cannot be sharded")
    if experts % size:
        return f"the model's {experts} experts do not divide by the {size} ranks: use a rank count that divides {experts}"
    return None


def distributed_config(config, size: int) -> DistributedConfig:
    """transformers' layout over `size` ranks: the tensor-parallel plan, and for a mixture of
    experts the expert-parallel plan over the same ranks (whole experts per rank)."""
    return DistributedConfig(tp_plan="auto", tp_size=size, ep_size=size if expert_count(config) else 1)
