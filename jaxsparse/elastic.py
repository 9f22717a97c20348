"""Elastic tickets: a ticket found at one depth, stretched or squeezed to another depth
of the same family (Chen et al., NeurIPS 2021).

A network of the family has stages of blocks; a regex with the named groups ``stage`` and
``block`` finds them in the param paths (``stage1_block2/conv1/kernel``). Per stage, a
*block mapping* names the source block each target block is copied from (mask and rewind
weights); block 0 of each stage (the one that may change shape), the stem and the head
are copied as they are.

Strategies (``n = N - 1`` source and ``m = M - 1`` target blocks after block 0; block
numbers below count from 1 for these):

* ``"interleave"`` (the paper's default), both ways. Split the longer run of blocks into
  as many consecutive groups as the shorter has blocks, as equal as possible, the earlier
  groups one larger (``divmod``). *Stretch*: group ``i`` of target blocks is filled with
  source block ``i`` (2 -> 4: 1,1,2,2; 2 -> 5: 1,1,1,2,2). *Squeeze*: the first block of
  each group of source blocks is kept (4 -> 2: 1,3; 5 -> 2: 1,4). Squeezing an
  interleaved stretch gives back the original mapping.
* ``"cycle"`` (stretch): 1,2,...,n,1,2,... ; ``"replicate_last"`` (stretch): 1,...,n,n,n.
* ``"keep_first"`` (squeeze): blocks 1..m; ``"keep_last"`` (squeeze): blocks n-m+1..n.

With ``N == M`` every strategy is the identity.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

import chex
import jax
import jax.numpy as jnp
import numpy as np

from jaxsparse._transplant import flat_paths, onto
from jaxsparse.filters import Filter, all_leaves
from jaxsparse.masks import check_mask, mask_prunable
from jaxsparse.pruning import shuffle_mask

DEFAULT_BLOCK = r"stage(?P<stage>\d+)_block(?P<block>\d+)/"
STRETCH = ("interleave", "cycle", "replicate_last")
SQUEEZE = ("interleave", "keep_first", "keep_last")


def block_mapping(n_source: int, n_target: int, strategy: str = "interleave") -> list[int]:
    """The source block of each target block in one stage (block 0 always from block 0).

    Args:
      n_source: N, the source's blocks in the stage (block 0 included), >= 1.
      n_target: M, the target's blocks in the stage, >= 1.
      strategy: see the module docstring.

    Returns:
      A list of ``n_target`` source block indices, starting with 0.

    Raises:
      ValueError: an unknown strategy, a stretch-only strategy asked to squeeze (or the
        reverse), a count below 1, or a stretch from a stage that has only block 0.

    Examples:
        >>> block_mapping(4, 7), block_mapping(4, 7, "cycle"), block_mapping(7, 4)
        ([0, 1, 1, 2, 2, 3, 3], [0, 1, 2, 3, 1, 2, 3], [0, 1, 3, 5])

    References:
      Chen et al., "The Elastic Lottery Ticket Hypothesis", NeurIPS 2021.
    """
    if strategy not in STRETCH + SQUEEZE:
        raise ValueError(
            f"elastic: strategy must be one of {sorted(set(STRETCH + SQUEEZE))}, got {strategy!r}"
        )
    if n_source < 1 or n_target < 1:
        raise ValueError(f"elastic: block counts must be >= 1, got {n_source} -> {n_target}")
    n, m = n_source - 1, n_target - 1
    if n == m:
        return list(range(n_target))
    if m > n and strategy not in STRETCH:
        raise ValueError(f"elastic: strategy {strategy!r} squeezes only; {STRETCH} stretch")
    if m < n and strategy not in SQUEEZE:
        raise ValueError(f"elastic: strategy {strategy!r} stretches only; {SQUEEZE} squeeze")
    if m == 0:
        return [0]
    if n == 0:
        raise ValueError(f"elastic: cannot stretch a stage with only block 0 to {n_target} blocks")
    if strategy == "interleave":
        q, r = divmod(max(n, m), min(n, m))
        sizes = [q + (i < r) for i in range(min(n, m))]
        if m > n:
            inner = [i for i, size in enumerate(sizes) for _ in range(size)]
        else:
            inner = [sum(sizes[:i]) for i in range(m)]
    elif strategy == "cycle":
        inner = [j % n for j in range(m)]
    elif strategy == "replicate_last":
        inner = [min(j, n - 1) for j in range(m)]
    elif strategy == "keep_first":
        inner = list(range(m))
    else:  # keep_last
        inner = [j + n - m for j in range(m)]
    return [0] + [i + 1 for i in inner]


def _shuffle_one(key_and_mask):
    return shuffle_mask(*key_and_mask, where=all_leaves)


# One compilation a leaf shape, the leaves of that shape in a lax.map: eager, each
# leaf's 32 counting passes are slow, and one program over all leaves compiles slowly
# (vmap would turn shuffle_mask's tie-breaking cond into both branches).
_shuffle_stack = jax.jit(lambda keys, masks: jax.lax.map(_shuffle_one, (keys, masks)))


def _shuffle(key: jax.Array, masks: list[jax.Array]) -> list[jax.Array]:
    """Each mask shuffled with its own key, its alive count kept exactly."""
    if not masks:
        return []
    keys = jax.random.split(key, len(masks))
    by_shape: dict = {}
    for j, m in enumerate(masks):
        by_shape.setdefault(m.shape, []).append(j)
    out = list(masks)
    for idx in by_shape.values():
        new = _shuffle_stack(keys[np.asarray(idx)], jnp.stack([masks[j] for j in idx]))
        for row, j in enumerate(idx):
            out[j] = new[row]
    return out


def _stage_key(text: str) -> int | str:
    return int(text) if text.isdigit() else text


# (stage, block, role) of a leaf inside a block
Location = tuple[int | str, int, str]


def _locate(paths: list[str], pattern: re.Pattern, who: str) -> list[Location | None]:
    """``(stage, block, role)`` of each path in a block, ``None`` outside blocks; the role
    is the path with the block number cut out, the same in every block of a stage."""
    out: list[Location | None] = []
    for path in paths:
        found = pattern.search(path)
        if found is None:
            out.append(None)
            continue
        stage, block = found.group("stage"), found.group("block")
        if stage is None or block is None or not block.isdigit():
            raise ValueError(
                f"elastic: {who} path '{path}' matches the block regex but its stage "
                f"{stage!r} or block {block!r} is missing or not a number"
            )
        role = path[: found.start("block")] + "\0" + path[found.end("block") :]
        out.append((_stage_key(stage), int(block), role))
    return out


def _blocks_per_stage(located: list[Location | None], who: str) -> dict:
    blocks: dict = {}
    for loc in located:
        if loc is not None:
            blocks.setdefault(loc[0], set()).add(loc[1])
    for stage, ids in blocks.items():
        if sorted(ids) != list(range(len(ids))):
            raise ValueError(
                f"elastic: {who} stage {stage} has blocks {sorted(ids)}; expected 0..N-1"
            )
    return {stage: len(ids) for stage, ids in blocks.items()}


def _stage_mappings(src_n: dict, tgt_n: dict, strategy: str, mapping: object) -> dict:
    if set(src_n) != set(tgt_n):
        raise ValueError(
            f"elastic: source stages {sorted(src_n, key=str)} differ from target stages "
            f"{sorted(tgt_n, key=str)}"
        )
    if mapping is not None and not isinstance(mapping, Mapping):
        raise TypeError(f"elastic: mapping= must be a mapping {{stage: [blocks]}}, got {mapping!r}")
    given = {_stage_key(str(k)): list(v) for k, v in (mapping or {}).items()}
    for stage, blocks in given.items():
        if stage not in tgt_n:
            raise ValueError(
                f"elastic: mapping names stage {stage!r}, not one of {sorted(tgt_n, key=str)}"
            )
        if len(blocks) != tgt_n[stage]:
            raise ValueError(
                f"elastic: mapping[{stage!r}] has {len(blocks)} entries; the target's stage "
                f"{stage} has {tgt_n[stage]} blocks"
            )
        for j, b in enumerate(blocks):
            integer = isinstance(b, int | np.integer) and not isinstance(b, bool)
            if not integer or not 0 <= b < src_n[stage]:
                raise ValueError(
                    f"elastic: mapping[{stage!r}][{j}] names source block {b!r}; the "
                    f"source's stage {stage} has blocks 0..{src_n[stage] - 1}"
                )
    block_mapping(2, 2, strategy)  # validates the strategy even when mapping covers all
    return {
        s: [int(b) for b in given[s]] if s in given else block_mapping(src_n[s], tgt_n[s], strategy)
        for s in tgt_n
    }


def elastic(
    params: chex.ArrayTree,
    mask: chex.ArrayTree,
    target_params: chex.ArrayTree,
    *,
    block: str = DEFAULT_BLOCK,
    strategy: str = "interleave",
    mapping: Mapping[int | str, Sequence[int]] | None = None,
    shuffle_key: jax.Array | None = None,
    where: Filter = None,
) -> tuple[chex.ArrayTree, chex.ArrayTree]:
    """Stretches or squeezes a ticket (rewind weights and mask) to another depth.

    Every target leaf inside a block (``block`` regex) is copied from the leaf with the
    same role (the same path but for the block number) in the source block that the
    stage's mapping names; every leaf outside the blocks (stem, head) from the leaf with
    the same path. Shapes must agree leaf for leaf.

    Args:
      params: the source ticket's rewind weights. Pass the dense rewind weights (e.g.
        ``state.rewind_params``) when using ``shuffle_key``: positions a shuffled mask
        revives take their values from here.
      mask: the source ticket's mask, mirroring ``params``.
      target_params: the target network's params (paths, shapes, dtypes, shardings).
      block: a regex with named groups ``stage`` and ``block`` (an integer), searched in
        each path.
      strategy: how blocks 1.. are mapped in each stage (see the module docstring).
      mapping: ``{stage: [source block for each target block 0..M-1]}``, overriding
        ``strategy`` for the stages it names (keys ints or strings).
      shuffle_key: if given, the paper's control: every prunable leaf of target blocks
        1.. gets a randomly shuffled copy of its copied mask, with its alive count kept
        exactly (independently for each copy; see :func:`jaxsparse.shuffle_mask`);
        block 0, stem and head keep their masks.
      where: which leaves ``shuffle_key`` shuffles (default: kernels, ``ndim >= 2``, not biases);
        unused without ``shuffle_key``.

    Returns:
      ``(params, mask)`` mirroring ``target_params``; ``params`` is zero where the new
      mask is ``False``.

    Raises:
      ValueError: a block regex without both named groups, stages that differ, block
        numbers that are not 0..N-1, a bad strategy or mapping entry, a shape mismatch
        (naming both paths and shapes), source leaves outside the blocks that the target
        lacks, a block regex that matches no path, or target leaves left unfilled
        (naming them).

    Examples:
        >>> src = {"stem": jnp.ones((1, 2))} | {
        ...     f"stage0_block{b}/w": jnp.full((2, 2), float(b)) for b in range(3)}
        >>> tgt = {"stem": jnp.zeros((1, 2))} | {
        ...     f"stage0_block{b}/w": jnp.zeros((2, 2)) for b in range(5)}
        >>> p, m = elastic(src, jax.tree.map(lambda x: x > 0, src), tgt)
        >>> [float(p[f"stage0_block{b}/w"][0, 0]) for b in range(5)]
        [0.0, 1.0, 1.0, 2.0, 2.0]

    References:
      Chen et al., "The Elastic Lottery Ticket Hypothesis", NeurIPS 2021.
    """
    check_mask(mask, params, name="elastic: mask")
    try:
        pattern = re.compile(block)
    except re.error as e:
        raise ValueError(f"elastic: block regex {block!r} is invalid: {e}") from None
    if not {"stage", "block"} <= set(pattern.groupindex):
        raise ValueError(
            f"elastic: block regex {block!r} needs the named groups (?P<stage>...) and "
            f"(?P<block>...); it has {sorted(pattern.groupindex)}"
        )
    s_paths, s_leaves, _ = flat_paths(params)
    t_paths, t_leaves, treedef = flat_paths(target_params)
    s_loc, t_loc = _locate(s_paths, pattern, "source"), _locate(t_paths, pattern, "target")
    for who, located in (("source", s_loc), ("target", t_loc)):
        if all(x is None for x in located):
            raise ValueError(f"elastic: the block regex {block!r} matches no {who} path")
    maps = _stage_mappings(
        _blocks_per_stage(s_loc, "source"), _blocks_per_stage(t_loc, "target"), strategy, mapping
    )
    index: dict[str | Location, int] = {
        (loc or path): i for i, (path, loc) in enumerate(zip(s_paths, s_loc))
    }
    sources: list[int] = []  # one per target leaf once no target leaf is unfilled
    unfilled = []
    for path, loc, leaf in zip(t_paths, t_loc, t_leaves):
        key = path if loc is None else (loc[0], maps[loc[0]][loc[1]], loc[2])
        i = index.get(key)
        if i is None:
            unfilled.append(path)
            continue
        if jnp.shape(s_leaves[i]) != jnp.shape(leaf):
            raise ValueError(
                f"elastic: source leaf '{s_paths[i]}' has shape {jnp.shape(s_leaves[i])} "
                f"but target leaf '{path}' has shape {jnp.shape(leaf)}"
            )
        sources.append(i)
    if unfilled:
        raise ValueError(f"elastic: no source leaf fills the target leaves {unfilled[:10]}")
    t_set = set(t_paths)
    extra = [p for p, loc in zip(s_paths, s_loc) if loc is None and p not in t_set]
    if extra:
        raise ValueError(
            f"elastic: source leaves outside the blocks are not in the target: {extra[:10]}"
        )
    m_leaves = jax.tree.leaves(mask)
    masks = [onto(m_leaves[i], leaf, bool) for i, leaf in zip(sources, t_leaves)]
    if shuffle_key is not None:
        sel = mask_prunable(jax.tree.unflatten(treedef, masks), where)
        picked = [j for j, loc in enumerate(t_loc) if loc is not None and loc[1] > 0 and sel[j]]
        # one call: an independent key per leaf, so every copy gets its own shuffle
        shuffled = _shuffle(shuffle_key, [masks[j] for j in picked])
        for j, m in zip(picked, shuffled):
            masks[j] = onto(m, t_leaves[j], bool)
    new_params = []
    for i, m, leaf in zip(sources, masks, t_leaves):
        w = onto(s_leaves[i], leaf)
        new_params.append(jnp.where(m, w, jnp.zeros((), w.dtype)))
    new_mask = masks
    return jax.tree.unflatten(treedef, new_params), jax.tree.unflatten(treedef, new_mask)
