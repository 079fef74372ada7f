"""Per-family knowledge, one small adapter module each.

`registry.adapter_for(model)` picks the adapter (architectures without one get the generic
fallback: embeddings, block inputs/outputs, attention through transformers' interface, logits).
`base` defines what an adapter is, `slots` the standard hook slots of a block, `common` the
helpers several families share, and `facts` (torch-free) what each model type's config means
for counting its parameters. This file imports nothing, so `facts` is read without torch.
"""
