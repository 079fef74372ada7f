"""Each family's block equations recomputed from its weights (float64), independent of its modules.

`block_ref(model, family, layer)` returns a `BlockRef`: the weights of one block as plain
functions of recorded inputs (a norm of a residual, a projection of a normed input, an expert
of the MLP). Only the rotary tables (cos, sin) come from the model's rotary embedding; everything else is
written out from the parameters.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch.nn import functional as F

Fn = Callable[[torch.Tensor], torch.Tensor]
D = torch.float64


def _w(t: torch.Tensor | None) -> torch.Tensor | None:
    return None if t is None else t.detach().to("cpu", D)


def _with_tl_parts(f: Fn, centre: bool, eps: float) -> Fn:
    """Attach TransformerLens's `scale` (sqrt(mean(x²) + eps), of the centred x for LayerNorm) and
    `normalized` (x / scale, before the weight) to a norm function."""

    def scale(x):
        x = x - x.mean(-1, keepdim=True) if centre else x
        return (x.pow(2).mean(-1, keepdim=True) + eps).sqrt()  # [T, 1]

    f.scale = scale
    f.normalized = lambda x: (x - x.mean(-1, keepdim=True) if centre else x) / scale(x)
    return f


def rms(norm, offset: float = 0.0) -> Fn:
    """x / sqrt(mean(x²) + eps) * (offset + w), from an RMSNorm module's weight and eps."""
    w = _w(norm.weight)
    eps = getattr(norm, "variance_epsilon", None) or norm.eps

    def f(x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * (offset + w)

    return _with_tl_parts(f, False, eps)


def layer_norm(norm) -> Fn:
    w, b = _w(norm.weight), _w(norm.bias)
    return _with_tl_parts(lambda x: F.layer_norm(x, (x.shape[-1],), w, b, norm.eps), True, norm.eps)


def randomize_norms(model: torch.nn.Module, seed: int = 1) -> torch.nn.Module:
    """Give every norm a random weight (and bias) so that a norm's output differs from its
    normalized input (freshly built models have weight 1, bias 0, which would hide the difference)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if "norm" not in type(module).__name__.lower():
                continue
            for name, p in module.named_parameters(recurse=False):
                if p.dim() == 1:
                    base = 0.0 if name == "bias" else 1.0
                    p.copy_((base + 0.2 * torch.randn(p.shape, generator=g)).to(p.dtype))
    return model


def linear(weight, bias=None, transposed: bool = False) -> Fn:
    """x·Wᵀ + b (nn.Linear) or x·W + b (GPT-2's Conv1D when transposed)."""
    w, b = _w(weight), _w(bias)
    if transposed:
        w = w.T
    return lambda x: x @ w.T + (0 if b is None else b)


def act(name: str) -> Fn:
    return {
        "silu": F.silu,
        "gelu": F.gelu,
        "gelu_new": lambda x: F.gelu(x, approximate="tanh"),
        "gelu_pytorch_tanh": lambda x: F.gelu(x, approximate="tanh"),
    }[name]


@dataclass
class BlockRef:
    n_heads: int
    n_kv: int
    d_head: int
    ln1: Fn
    q: Fn  # ln1 [T, d_model] -> [T, n_heads * d_head]
    k: Fn
    v: Fn
    o: Fn  # z [T, n_heads * d_head] -> [T, d_model]
    ln2: Fn
    scaling: float
    rotary: bool = True
    q_norm: Fn | None = None  # per head, [T, n, d_head]
    k_norm: Fn | None = None
    attn_softcap: float | None = None
    window: int | None = None  # sliding window of this layer
    ln1_post: Fn | None = None
    ln2_post: Fn | None = None
    parallel: bool = False
    mlp: str = "gated"  # "gated" | "plain" | "moe"
    gate: Fn | None = None  # gated: ln2 -> pre; plain: ln2 -> pre (W_in)
    up: Fn | None = None
    down: Fn | None = None
    act: Fn | None = None
    router: Fn | None = None  # moe: ln2 -> router logits [T, n_experts]
    experts: list = field(default_factory=list)  # moe: expert e as a function ln2 -> [T, d_model]
    top_k: int = 0
    norm_topk: bool = True  # moe: renormalise the top-k probabilities


@dataclass
class HeadRef:
    embed: torch.Tensor  # [vocab, d_model]
    embed_scale: float
    pos_embed: torch.Tensor | None  # [n_ctx, d_model]
    final_norm: Fn
    unembed: Fn  # ln_final -> logits (soft-capped where the family caps)


def _llama_like(model, layer, window=None, **extra) -> BlockRef:
    c, a = model.config, layer.self_attn
    n_heads = c.num_attention_heads
    d_head = getattr(c, "head_dim", None) or c.hidden_size // n_heads
    mlp = layer.mlp
    ref = dict(
        n_heads=n_heads,
        n_kv=c.num_key_value_heads,
        d_head=d_head,
        ln1=rms(layer.input_layernorm),
        o=linear(a.o_proj.weight, a.o_proj.bias),
        ln2=rms(layer.post_attention_layernorm),
        scaling=d_head**-0.5,
        window=window,
    )
    if hasattr(a, "q_proj"):
        ref.update(
            q=linear(a.q_proj.weight, a.q_proj.bias),
            k=linear(a.k_proj.weight, a.k_proj.bias),
            v=linear(a.v_proj.weight, a.v_proj.bias),
        )
    if hasattr(mlp, "gate_proj"):
        ref.update(
            gate=linear(mlp.gate_proj.weight),
            up=linear(mlp.up_proj.weight),
            down=linear(mlp.down_proj.weight),
            act=act(getattr(c, "hidden_activation", None) or c.hidden_act),
        )
    ref.update(extra)
    return BlockRef(**ref)


def _window(model, i: int) -> int | None:
    c = model.config
    types = getattr(c, "layer_types", None)
    if not getattr(c, "sliding_window", None):
        return None
    if types is None or types[i] == "sliding_attention":
        return int(c.sliding_window)
    return None


def _qwen3(model, i):
    a = model.model.layers[i].self_attn
    return _llama_like(model, model.model.layers[i], q_norm=rms(a.q_norm), k_norm=rms(a.k_norm))


def _phi3(model, i):
    layer, c = model.model.layers[i], model.config
    d_head = c.hidden_size // c.num_attention_heads
    nq, nkv = c.num_attention_heads * d_head, c.num_key_value_heads * d_head
    w = layer.self_attn.qkv_proj.weight  # [nq + 2 nkv, d_model]
    gu = layer.mlp.gate_up_proj.weight  # [2 d_mlp, d_model]
    d_mlp = c.intermediate_size
    return _llama_like(
        model,
        layer,
        window=_window(model, i),
        q=linear(w[:nq]),
        k=linear(w[nq : nq + nkv]),
        v=linear(w[nq + nkv :]),
        gate=linear(gu[:d_mlp]),
        up=linear(gu[d_mlp:]),
        down=linear(layer.mlp.down_proj.weight),
        act=act(c.hidden_act),
    )


def _gemma(model, i):
    layer, c = model.model.layers[i], model.config
    a = layer.self_attn
    extra = dict(
        ln1=rms(layer.input_layernorm, 1.0),
        ln1_post=rms(layer.post_attention_layernorm, 1.0),
        ln2=rms(layer.pre_feedforward_layernorm, 1.0),
        ln2_post=rms(layer.post_feedforward_layernorm, 1.0),
        scaling=c.query_pre_attn_scalar**-0.5,
        attn_softcap=c.attn_logit_softcapping,
        act=act(c.hidden_activation),
    )
    if hasattr(a, "q_norm"):
        extra.update(q_norm=rms(a.q_norm, 1.0), k_norm=rms(a.k_norm, 1.0))
    return _llama_like(model, layer, window=_window(model, i), **extra)


def _mixtral(model, i, **extra):
    layer, c = model.model.layers[i], model.config
    moe = layer.mlp
    if not hasattr(moe, "experts"):  # a dense layer of a MoE model
        return _llama_like(model, layer, window=_window(model, i), **extra)
    gate_up, down = _w(moe.experts.gate_up_proj), _w(moe.experts.down_proj)  # [E, 2 d_mlp, d], [E, d, d_mlp]
    silu = act(c.hidden_act)

    def expert(e):
        def f(x):
            g, u = (x @ gate_up[e].T).chunk(2, dim=-1)  # [T, d_mlp] each
            return (silu(g) * u) @ down[e].T  # [T, d_model]

        return f

    return _llama_like(
        model,
        layer,
        window=_window(model, i),
        mlp="moe",
        router=linear(moe.gate.weight),
        experts=[expert(e) for e in range(moe.experts.num_experts)],
        top_k=c.num_experts_per_tok,
        norm_topk=bool(getattr(c, "norm_topk_prob", True)),
        **extra,
    )


def _qwen3_moe(model, i):
    a = model.model.layers[i].self_attn
    return _mixtral(model, i, q_norm=rms(a.q_norm), k_norm=rms(a.k_norm))


def _gpt2(model, i):
    layer, c = model.transformer.h[i], model.config
    d = c.n_embd
    w, b = layer.attn.c_attn.weight, layer.attn.c_attn.bias  # Conv1D: [d, 3d], [3d]
    return BlockRef(
        n_heads=c.n_head,
        n_kv=c.n_head,
        d_head=d // c.n_head,
        ln1=layer_norm(layer.ln_1),
        q=linear(w[:, :d], b[:d], transposed=True),
        k=linear(w[:, d : 2 * d], b[d : 2 * d], transposed=True),
        v=linear(w[:, 2 * d :], b[2 * d :], transposed=True),
        o=linear(layer.attn.c_proj.weight, layer.attn.c_proj.bias, transposed=True),
        ln2=layer_norm(layer.ln_2),
        scaling=(d // c.n_head) ** -0.5,
        rotary=False,
        mlp="plain",
        gate=linear(layer.mlp.c_fc.weight, layer.mlp.c_fc.bias, transposed=True),
        down=linear(layer.mlp.c_proj.weight, layer.mlp.c_proj.bias, transposed=True),
        act=act(c.activation_function),
    )


def _neox(model, i):
    layer, c = model.gpt_neox.layers[i], model.config
    n, d = c.num_attention_heads, c.hidden_size // c.num_attention_heads
    w = _w(layer.attention.query_key_value.weight).reshape(n, 3, d, -1)  # per head [q | k | v] rows
    b = _w(layer.attention.query_key_value.bias).reshape(n, 3, d)

    def part(j):
        return linear(w[:, j].reshape(n * d, -1), b[:, j].reshape(n * d))

    return BlockRef(
        n_heads=n,
        n_kv=n,
        d_head=d,
        ln1=layer_norm(layer.input_layernorm),
        q=part(0),
        k=part(1),
        v=part(2),
        o=linear(layer.attention.dense.weight, layer.attention.dense.bias),
        ln2=layer_norm(layer.post_attention_layernorm),
        scaling=d**-0.5,
        parallel=bool(c.use_parallel_residual),
        mlp="plain",
        gate=linear(layer.mlp.dense_h_to_4h.weight, layer.mlp.dense_h_to_4h.bias),
        down=linear(layer.mlp.dense_4h_to_h.weight, layer.mlp.dense_4h_to_h.bias),
        act=act(c.hidden_act),
    )


BLOCKS = {
    "llama": lambda m, i: _llama_like(m, m.model.layers[i]),
    "mistral": lambda m, i: _llama_like(m, m.model.layers[i], window=_window(m, i)),
    "qwen2": lambda m, i: _llama_like(m, m.model.layers[i]),
    "qwen3": _qwen3,
    "phi3": _phi3,
    "gemma2": _gemma,
    "gemma3": _gemma,
    "mixtral": _mixtral,
    "qwen3_moe": _qwen3_moe,
    "gpt2": _gpt2,
    "gpt_neox": _neox,
    "gpt_neox_sequential": _neox,
}


def block_ref(model, family: str, i: int) -> BlockRef:
    return BLOCKS[family](model, i)


def head_ref(model, family: str) -> HeadRef:
    c = model.config
    cap = getattr(c, "final_logit_softcapping", None)
    w_u = linear(model.get_output_embeddings().weight, getattr(model.get_output_embeddings(), "bias", None))

    def unembed(x):
        logits = w_u(x)
        return logits if cap is None else torch.tanh(logits / cap) * cap

    if family == "generic":
        from stepscope.tracer.adapters.generic import find_final_norm, find_layers

        norm = find_final_norm(find_layers(model)[0])
        final = layer_norm(norm) if getattr(norm, "bias", None) is not None else rms(norm)
        return HeadRef(_w(model.get_input_embeddings().weight), 1.0, None, final, unembed)
    if family == "gpt2":
        t = model.transformer
        return HeadRef(_w(t.wte.weight), 1.0, _w(t.wpe.weight), layer_norm(t.ln_f), unembed)
    if family.startswith("gpt_neox"):
        b = model.gpt_neox
        return HeadRef(_w(b.embed_in.weight), 1.0, None, layer_norm(b.final_layer_norm), unembed)
    gemma = family.startswith("gemma")
    scale = float(torch.tensor(c.hidden_size**0.5, dtype=model.dtype)) if gemma else 1.0  # the model's rounding
    return HeadRef(_w(model.model.embed_tokens.weight), scale, None, rms(model.model.norm, 1.0 if gemma else 0.0), unembed)


def rotary_tables(model, family: str, layer: int, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """cos, sin [T, rotary_dim] for `positions` from the model's own rotary embedding (per layer type)."""
    base = model.gpt_neox if family.startswith("gpt_neox") else model.model
    rotary = base.rotary_emb
    dummy = torch.zeros(1, len(positions), 1, dtype=torch.float32)
    kwargs = {}
    if "layer_type" in inspect.signature(rotary.forward).parameters:
        kwargs["layer_type"] = model.config.layer_types[layer]
    cos, sin = rotary(dummy, positions[None].long(), **kwargs)  # [1, T, rotary_dim]
    return cos[0].to(D), sin[0].to(D)


def rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x [T, n, d_head] rotated (rotate-half convention) on its first rotary_dim features."""
    rd = cos.shape[-1]
    rot, rest = x[..., :rd], x[..., rd:]
    half = torch.cat([-rot[..., rd // 2 :], rot[..., : rd // 2]], dim=-1)
    return torch.cat([rot * cos[:, None] + half * sin[:, None], rest], dim=-1)
