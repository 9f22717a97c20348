r"""Structured sparsity: whole neurons, channels, heads, blocks and N:M patterns.

Structured masks are still ordinary param masks, so :func:`jaxsparse.masked`,
:func:`jaxsparse.imp_round`, checkpoints and the rest take them unchanged.

* Group specs (:mod:`~jaxsparse.structured.groups`): ``{set_name: [(path_regex, axis)]}``
  says which param slices form one prunable unit. :func:`group_scores` scores the groups,
  :func:`jaxsparse.prune` (with ``where=js.all_leaves``) prunes them with exact counts,
  :func:`expand` turns the group mask into a param mask, :func:`shrink` cuts the pruned
  groups out for a physically smaller model.
* Spec helpers (:mod:`~jaxsparse.structured.specs`): :func:`neurons`, :func:`channels`,
  :func:`heads`.
* Patterns (:mod:`~jaxsparse.structured.patterns`): :func:`nm` (N:M), :func:`blocks` /
  :func:`unblock`.

A whole round, channel pruning by ``|BN gamma|``::

    spec = js.structured.channels(variables["params"])
    gs = js.structured.group_scores(variables["params"], spec, where=r"BatchNorm_\d+/scale")
    gmask = js.prune(gs, js.mask_like(gs), 0.5, scope="global", where=js.all_leaves)
    mask = js.structured.expand(gmask, spec, variables["params"])   # for masked()
    small, widths = js.structured.shrink(variables, gmask, spec)    # batch_stats too

Set names are the group mask's paths, so ``prune``'s ``rates=`` mixes scopes in one call,
as EarlyBERT does (heads 1 of 4 in every layer, FFN units 40% globally)::

    spec = {**js.structured.heads(params), **js.structured.neurons(params, ["ffn_in", "ffn_out"])}
    gmask = js.prune(gs, gmask, 0.4, scope="global", where=js.all_leaves, rates={"attn": 0.25})
"""

from jaxsparse.structured.groups import GroupSpec, check_spec, expand, group_scores, shrink
from jaxsparse.structured.patterns import blocks, nm, unblock
from jaxsparse.structured.specs import channels, heads, neurons

__all__ = [
    "GroupSpec",
    "blocks",
    "channels",
    "check_spec",
    "expand",
    "group_scores",
    "heads",
    "neurons",
    "nm",
    "shrink",
    "unblock",
]
