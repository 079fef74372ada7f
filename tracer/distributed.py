"""Tensor parallelism: tracing a model sharded over the ranks of `torchrun` (transformers' tp_plan="auto").

Every rank runs the same session code (the same forwards, the same collectives, in the same
order). transformers shards the attention heads and the MLP neurons: a column-parallel
projection (q/k/v, gate/up) returns this rank's slice of its output features, a row-parallel
one (o_proj, down_proj) takes this rank's slice as input and all-reduces its output, so the
residual stream is the same on every rank. What the recorder sees:

    replicated   resid_pre/mid/post, attn_out, mlp_out, norms, embed, logits (after the all-reduce/gather)
    sharded      the output of a column-parallel module (hook_q, hook_k, mlp.hook_pre, hook_pre_linear)
                 and the input of a row-parallel one (mlp.hook_post, attn.hook_o_input): the last axis;
                 the traced attention's q/k/v/z (head axis 1) and scores/pattern (head axis 0)

The write path: the sharded tensors of a step are gathered to rank 0 in one collective
(`ShardGather`), joined along their shard axis and transformed there; rank 0 writes the usual
trace (the reader needs no change). The other ranks keep nothing of a step but the sampling
record and write only that, into a directory removed when the process ends. docs/RECORDING.md
gives the measurement behind this choice.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import cast

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.tensor import DTensor, Shard

from .expert_parallel import expert_refusal
from .model_spec import ModelLoadError
from .scratch import make_live_dir


class TensorParallelError(ModelLoadError):
    """The model cannot be traced with tensor parallelism here (one line for the user)."""


def world() -> tuple[int, int]:
    """(rank, world size) under torchrun (the RANK / WORLD_SIZE it sets), (0, 1) otherwise."""
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))


def check_launched() -> None:
    """TensorParallelError outside torchrun (no RANK / WORLD_SIZE to join a process group with)."""
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        raise TensorParallelError("--tensor-parallel runs under torchrun: torchrun --nproc-per-node N -m stepscope ...")


def init() -> tuple[int, int]:
    """Join torchrun's process group (gloo on a CPU, nccl with CUDA); (rank, world size).
    TensorParallelError outside torchrun."""
    check_launched()
    if not dist.is_initialized():
        cuda = torch.cuda.is_available()
        if cuda:
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group("nccl" if cuda else "gloo")
    return dist.get_rank(), dist.get_world_size()


def check_shardable(config, size: int) -> None:
    """TensorParallelError unless transformers can shard this family over `size` ranks with every
    rank holding whole attention heads, whole KV heads and an equal share of the MLP neurons."""
    model_type = getattr(config, "model_type", "?")
    plan = getattr(config, "base_model_tp_plan", None)
    if not plan:
        raise TensorParallelError(f"{model_type} models cannot be sharded: transformers has no tensor-parallel plan for them")
    if refusal := expert_refusal(config, size):  # a mixture of experts: tracer/expert_parallel.py
        raise TensorParallelError(refusal)
    heads = getattr(config, "num_attention_heads", None)
    kv = getattr(config, "num_key_value_heads", None) or heads
    mlp = getattr(config, "intermediate_size", None)
    for what, n in (("attention heads", heads), ("KV heads", kv), ("MLP neurons (intermediate_size)", mlp)):
        if n and n % size:
            raise TensorParallelError(f"the model's {n} {what} do not divide by the {size} ranks: "
                                      f"use a rank count that divides {n}")


def dense(t: torch.Tensor) -> torch.Tensor:
    """A sharded weight (DTensor) as its full tensor (a collective: every rank calls it); others as they are."""
    return t.full_tensor() if isinstance(t, DTensor) else t


def shard_width(module: nn.Module, where: str) -> int | None:
    """This rank's width of the last axis of the tensor at `where` ("in" / "out") of `module` when
    the module's weight is sharded along that axis (a column-parallel linear's output, a row-parallel
    one's input), else None. A tensor of that width holds this rank's slice; a wider one (a gathered
    output such as the LM head's) or one of another axis (an embedding's output) is whole."""
    weight = getattr(module, "weight", None)
    if not isinstance(weight, DTensor) or weight.dim() != 2 or not weight.placements[0].is_shard():
        return None
    dim = cast(Shard, weight.placements[0]).dim % 2  # is_shard() above: a Shard
    local = weight.to_local().shape
    if where == "out" and dim == 0 and local[0] != weight.shape[0]:
        return local[0]
    if where == "in" and dim == 1 and local[1] != weight.shape[1]:
        return local[1]
    return None


class ShardGather:
    """The sharded tensors of one step, joined on rank 0 in one collective per step.

    `defer(name, local, axis, transform)` keeps this rank's slice; `gather()` sends every slice to
    rank 0 in one flat buffer (dist.gather), joins each name's slices along `axis` there and
    applies `transform` to the full tensor: {name: tensor} on rank 0, {} on the others."""

    def __init__(self, rank: int, size: int):
        self.rank, self.size = rank, size
        self.pending: list[tuple[str, torch.Tensor, int, Callable[[torch.Tensor], torch.Tensor] | None]] = []
        self.seconds = 0.0  # time spent in gather() (measured for docs/RECORDING.md)
        self.bytes = 0  # bytes gathered to rank 0

    def defer(self, name: str, local: torch.Tensor, axis: int, transform=None) -> None:
        self.pending.append((name, local, axis, transform))

    def join_now(self, local: torch.Tensor, axis: int) -> torch.Tensor:
        """The full tensor on every rank (all_gather), for a transform every rank must run."""
        start = time.perf_counter()
        local = local.contiguous()
        parts = [torch.empty_like(local) for _ in range(self.size)]
        dist.all_gather(parts, local)
        self.seconds += time.perf_counter() - start
        return torch.cat(parts, dim=axis)

    def gather(self) -> dict[str, torch.Tensor]:
        if not self.pending:
            return {}
        pending, self.pending = self.pending, []
        start = time.perf_counter()
        dtype = pending[0][1].dtype  # one step's sharded tensors share the model's dtype
        flat = torch.cat([p[1].reshape(-1).to(dtype) for p in pending])  # [Σ numel]
        chunks = [torch.empty_like(flat) for _ in range(self.size)] if self.rank == 0 else None
        dist.gather(flat, chunks, dst=0)
        self.bytes += flat.numel() * flat.element_size() * self.size
        out: dict[str, torch.Tensor] = {}
        if chunks is not None:  # rank 0
            offset = 0
            for name, local, axis, transform in pending:
                n = local.numel()
                parts = [c[offset : offset + n].view(local.shape).to(local.dtype) for c in chunks]
                offset += n
                full = torch.cat(parts, dim=axis)
                out[name] = transform(full) if transform is not None else full
        self.seconds += time.perf_counter() - start
        return out


class TensorParallel:
    """What a recording session on one rank needs: its rank, the gather, and where its trace goes."""

    def __init__(self, rank: int, size: int):
        self.rank, self.size = rank, size
        self.gather = ShardGather(rank, size)

    @property
    def leader(self) -> bool:
        return self.rank == 0

    def out_dir(self, out: str | None) -> str | None:
        """Rank 0 writes `out`; another rank a private directory removed at exit (its steps hold no tensors)."""
        if self.leader:
            return out
        return make_live_dir()  # named after this process: removed at exit, or at the next start if it was killed
