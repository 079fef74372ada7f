"""The standard hook slots of a decoder block, in forward order.

A slot is a TransformerLens name (its shape is in `names.BLOCK_NAMES`), the role of the module
whose input or output it records, and which of the two. An adapter says, per role, which of the
block's attributes holds that module (`Adapter.modules`); a role it leaves out is a module the
family does not have, and its slots record nothing. `ATTENTION` and `MLP` mark where the family's
own attention and MLP names go (`Adapter.attention_hooks` / `Adapter.mlp_hooks`).

A family that differs composes the standard list: `replacing(BLOCK_SLOTS, RESID_MID.at("mlp"))`
(resid_mid is the MLP's input), `without(BLOCK_SLOTS, RESID_MID)` (no resid_mid).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from ..names import BLOCK_NAMES

ROLES = ("block", "ln1", "attn", "ln1_post", "ln2", "mlp", "ln2_post")


@dataclass(frozen=True)
class Slot:
    """`name` is the input (where="in") or output (where="out") of the block's `role` module;
    where="inside" marks the role's internal names, which the adapter lists itself."""

    name: str
    role: str
    where: str

    @property
    def shape(self) -> str:
        """The documented shape, e.g. "[T, d_model]" ("" for the inside markers)."""
        return BLOCK_NAMES.get(self.name, "")

    def at(self, role: str) -> Slot:
        """The same name, recorded at another module."""
        return replace(self, role=role)


RESID_PRE = Slot("hook_resid_pre", "block", "in")
LN1 = Slot("ln1.hook_normalized", "ln1", "out")  # a norm records hook_scale, hook_normalized and hook_out
ATTENTION = Slot("attn.*", "attn", "inside")  # the family's q/k projections, q/k norms, latents, gates
ATTN_OUT = Slot("hook_attn_out", "attn", "out")
LN1_POST = Slot("ln1_post.hook_normalized", "ln1_post", "out")  # post-attention norm (added to the residual)
RESID_MID = Slot("hook_resid_mid", "ln2", "in")
LN2 = Slot("ln2.hook_normalized", "ln2", "out")
MLP = Slot("mlp.*", "mlp", "inside")  # the family's gate/up/down activations, or its router
MLP_OUT = Slot("hook_mlp_out", "mlp", "out")
LN2_POST = Slot("ln2_post.hook_normalized", "ln2_post", "out")  # post-MLP norm (added to the residual)
RESID_POST = Slot("hook_resid_post", "block", "out")

BLOCK_SLOTS: tuple[Slot, ...] = (
    RESID_PRE, LN1, ATTENTION, ATTN_OUT, LN1_POST, RESID_MID, LN2, MLP, MLP_OUT, LN2_POST, RESID_POST,
)


def replacing(slots: tuple[Slot, ...], *new: Slot) -> tuple[Slot, ...]:
    """`slots` with each slot of the same name as one of `new` replaced by it."""
    by_name = {s.name: s for s in new}
    return tuple(by_name.get(s.name, s) for s in slots)


def without(slots: tuple[Slot, ...], *drop: Slot) -> tuple[Slot, ...]:
    """`slots` less the ones named in `drop`."""
    names = {s.name for s in drop}
    return tuple(s for s in slots if s.name not in names)
