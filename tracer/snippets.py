"""Short runnable TransformerLens and nnsight snippets for what the debugger does (pure strings).

Every intervention of the debugger's `I` dialog and every cell of a patching sweep can be redone in
another library, on the same token ids:

    patch_snippet("nnsight", facts, clean_ids, corrupt_ids, "resid_pre", layer=24, column=3, tokens=(7042, 11452))
    intervention_snippet("transformer_lens", facts, ids, ("zero_head", (3, 5), False), step=2, prompt_len=6)

`facts` are a trace's model facts (`trace.model`): the model to load, d_head, n_layers. The nnsight
snippets address modules in the common decoder layout (`model.model.layers[L].self_attn.o_proj`, `.mlp`,
`.mlp.down_proj`, `model.model.norm`); TransformerLens snippets use its hook names, which the recorded
names follow. Each prints the logit difference (patching) or the top next token (interventions).
"""

from __future__ import annotations

import os

LIBRARIES = ("transformer_lens", "nnsight")
TITLES = {"transformer_lens": "TransformerLens", "nnsight": "nnsight"}
# patching site -> TransformerLens hook name (block-local)
SITE_HOOKS = {"resid_pre": "hook_resid_pre", "attn_out": "hook_attn_out", "mlp_out": "hook_mlp_out", "head": "attn.hook_z"}


def model_id(facts: dict) -> str:
    """What the snippet loads: the model's source (a hub id or a directory); for a converted file (.gguf),
    the directory it was converted to when that is known."""
    source = str(facts.get("source") or facts.get("name") or "")
    if source.endswith(".gguf"):
        converted = (facts.get("config") or {}).get("_name_or_path")
        if isinstance(converted, str) and os.path.isdir(converted):
            return converted
    return source


def _tl_header(facts: dict) -> list[str]:
    return [
        "import torch",
        "from transformer_lens import HookedTransformer",
        "",
        "# no weight processing: the hooks then hold the values stepscope records",
        f"model = HookedTransformer.from_pretrained_no_processing({model_id(facts)!r}, device='cpu')",
    ]


def _nn_header(facts: dict) -> list[str]:
    return [
        "import torch",
        "from nnsight import LanguageModel",
        "",
        f"model = LanguageModel({model_id(facts)!r}, device_map='cpu', dispatch=True)",
    ]


def _nn_site(site: str, layer: int, n_layers: int) -> str:
    """The nnsight expression of a site's tensor in block `layer` ([batch, pos, ...])."""
    block = f"model.model.layers[{layer}]"
    return {
        "hook_resid_pre": f"{block}.input",
        "hook_resid_post": f"model.model.layers[{layer + 1}].input" if layer + 1 < n_layers else "model.model.norm.input",
        "hook_attn_out": f"{block}.self_attn.output[0]",
        "hook_mlp_out": f"{block}.mlp.output",
        "attn.hook_z": f"{block}.self_attn.o_proj.input",  # [batch, pos, n_heads * d_head]
        "mlp.hook_post": f"{block}.mlp.down_proj.input",
    }[site]


def patch_snippet(library: str, facts: dict, clean_ids: list[int], corrupt_ids: list[int], site: str, layer: int,
                  column: int, tokens: tuple[int, int]) -> str:
    """One patching cell: the corrupted run with `site` at (layer, position `column`) — or head `column`'s
    z at the last position — restored from the clean run; prints the logit difference tokens[0] − tokens[1]."""
    c, r = int(tokens[0]), int(tokens[1])
    name = SITE_HOOKS[site]
    d_head, n_layers = int(facts.get("d_head") or 0), int(facts.get("n_layers") or 0)
    if library == "transformer_lens":
        hook = f"blocks.{layer}.{name}"
        where = f"[:, -1, {column}]" if site == "head" else f"[:, {column}]"
        return "\n".join([
            *_tl_header(facts),
            f"clean = torch.tensor([{list(map(int, clean_ids))}])",
            f"corrupt = torch.tensor([{list(map(int, corrupt_ids))}])",
            f"_, cache = model.run_with_cache(clean, names_filter={hook!r})",
            "",
            "def restore(act, hook):",
            f"    act{where} = cache[hook.name]{where}",
            "    return act",
            "",
            f"logits = model.run_with_hooks(corrupt, fwd_hooks=[({hook!r}, restore)])",
            f"print(float(logits[0, -1, {c}] - logits[0, -1, {r}]))",
        ]) + "\n"
    if library == "nnsight":
        expr = _nn_site(name, layer, n_layers)
        where = f"[:, -1, {column * d_head}:{(column + 1) * d_head}]" if site == "head" else f"[:, {column}]"
        return "\n".join([
            *_nn_header(facts),
            f"clean = torch.tensor([{list(map(int, clean_ids))}])",
            f"corrupt = torch.tensor([{list(map(int, corrupt_ids))}])",
            "with model.trace(clean):",
            f"    source = {expr}{where}.save()",
            "with model.trace(corrupt):",
            f"    {expr}{where} = source",
            "    logits = model.lm_head.output.save()",
            f"print(float(logits[0, -1, {c}] - logits[0, -1, {r}]))",
        ]) + "\n"
    raise ValueError(f"unknown library {library!r}: {', '.join(LIBRARIES)}")


def _first(step: int, prompt_len: int) -> int:
    """The first position the step computes (its prefill: every prompt position)."""
    return 0 if step == 0 else prompt_len + step - 1


def intervention_snippet(library: str, facts: dict, ids: list[int], spec: tuple, step: int, prompt_len: int,
                         source_ids: list[int] | None = None) -> str:
    """An intervention of the debugger (spec = (kind, args, only), as the `I` dialog parses it) applied
    from `step`'s positions on, in one forward over `ids` (the tokens up to that step); prints the top
    next token. `source_ids`: the other trace's tokens, for a patch."""
    kind, args, _only = spec
    first = _first(step, prompt_len)
    d_head, n_layers = int(facts.get("d_head") or 0), int(facts.get("n_layers") or 0)
    if kind == "patch":
        layer, name, position, _path = args
        if source_ids is None:
            raise ValueError("a patch snippet needs the other trace's token ids")
        name, rows = str(name), f"[:, {int(position)}]"
    else:
        layer = int(args[0])
        name = {"zero_head": "attn.hook_z", "mean_head": "attn.hook_z", "scale_head": "attn.hook_z",
                "zero_neuron": "mlp.hook_post", "clamp_neuron": "mlp.hook_post", "steer": "hook_resid_post"}.get(kind)
        if name is None:
            raise ValueError(f"unknown intervention {kind!r}")
        rows = f"[:, {first}:]"
    if library == "transformer_lens":
        hook = f"blocks.{layer}.{name}"
        body = _tl_edit(kind, args, rows, hook, prompt_len)
        lines = [*_tl_header(facts), f"ids = torch.tensor([{list(map(int, ids))}])"]
        if kind in ("mean_head", "steer"):
            lines.append(f"_, cache = model.run_with_cache(ids, names_filter={hook!r})")
        if kind == "patch":
            lines += [f"source = torch.tensor([{list(map(int, source_ids or []))}])",
                      f"_, cache = model.run_with_cache(source, names_filter={hook!r})"]
        lines += ["", "def edit(act, hook):", *("    " + b for b in body), "    return act", "",
                  f"logits = model.run_with_hooks(ids, fwd_hooks=[({hook!r}, edit)])",
                  "top = int(logits[0, -1].argmax())",
                  "print(top, repr(model.tokenizer.decode([top])))"]
        return "\n".join(lines) + "\n"
    if library == "nnsight":
        expr = _nn_site(name, layer, n_layers)
        lines = [*_nn_header(facts), f"ids = torch.tensor([{list(map(int, ids))}])"]
        edit = _nn_edit(kind, args, rows, expr, d_head, prompt_len)
        if kind in ("mean_head", "steer"):
            lines += ["with model.trace(ids):", f"    before = {expr}.save()"]
        if kind == "patch":
            lines += [f"source = torch.tensor([{list(map(int, source_ids or []))}])", "with model.trace(source):",
                      f"    before = {expr}.save()"]
        lines += ["with model.trace(ids):", *("    " + e for e in edit), "    logits = model.lm_head.output.save()",
                  "top = int(logits[0, -1].argmax())", "print(top, repr(model.tokenizer.decode([top])))"]
        return "\n".join(lines) + "\n"
    raise ValueError(f"unknown library {library!r}: {', '.join(LIBRARIES)}")


def _tl_edit(kind: str, args: tuple, rows: str, hook: str, prompt_len: int) -> list[str]:
    sel = rows[:-1]  # "[:, a:" without the closing bracket: a head or neuron index follows
    if kind == "zero_head":
        return [f"act{sel}, {args[1]}] = 0"]
    if kind == "scale_head":
        return [f"act{sel}, {args[1]}] *= {float(args[2])!r}"]
    if kind == "mean_head":
        return [f"act{sel}, {args[1]}] = cache[{hook!r}][0, :{prompt_len}, {args[1]}].mean(0)"]
    if kind == "zero_neuron":
        return [f"act{sel}, {args[1]}] = 0"]
    if kind == "clamp_neuron":
        return [f"act{sel}, {args[1]}] = {float(args[2])!r}"]
    if kind == "steer":
        _layer, p1, p2, scale = args
        return [f"act{rows} += {float(scale)!r} * (cache[{hook!r}][0, {int(p1)}] - cache[{hook!r}][0, {int(p2)}])"]
    return [f"act{rows} = cache[{hook!r}]{rows}"]  # patch: the other trace's row at the position


def _nn_edit(kind: str, args: tuple, rows: str, expr: str, d_head: int, prompt_len: int) -> list[str]:
    sel = rows[:-1]
    if kind in ("zero_head", "scale_head", "mean_head"):
        h = int(args[1])
        cols = f"{h * d_head}:{(h + 1) * d_head}"
        if kind == "zero_head":
            return [f"{expr}{sel}, {cols}] = 0"]
        if kind == "scale_head":
            return [f"{expr}{sel}, {cols}] = {expr}{sel}, {cols}] * {float(args[2])!r}"]
        return [f"{expr}{sel}, {cols}] = before[0, :{prompt_len}, {cols}].mean(0)"]
    if kind == "zero_neuron":
        return [f"{expr}{sel}, {int(args[1])}] = 0"]
    if kind == "clamp_neuron":
        return [f"{expr}{sel}, {int(args[1])}] = {float(args[2])!r}"]
    if kind == "steer":
        _layer, p1, p2, scale = args
        return [f"{expr}{rows} = {expr}{rows} + {float(scale)!r} * (before[0, {int(p1)}] - before[0, {int(p2)}])"]
    return [f"{expr}{rows} = before{rows}"]


def snippets_for_patch(result, facts: dict, clean_ids: list[int], corrupt_ids: list[int], layer: int, column: int) -> dict[str, str]:
    """{library: snippet} for one cell of a patching result."""
    tokens = (int(result.clean_token["id"]), int(result.corrupt_token["id"]))
    return {lib: patch_snippet(lib, facts, clean_ids, corrupt_ids, result.site, layer, column, tokens) for lib in LIBRARIES}


def snippets_for_intervention(trace, step: int, spec: tuple, source_ids: list[int] | None = None) -> dict[str, str]:
    """{library: snippet} for an intervention of the `I` dialog at `step` of `trace`."""
    ids = [int(t["id"]) for t in trace.tokens[: trace.prompt_len + step]]
    return {lib: intervention_snippet(lib, trace.model, ids, spec, step, trace.prompt_len, source_ids) for lib in LIBRARIES}
