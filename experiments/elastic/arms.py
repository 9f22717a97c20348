"""The arms of a target depth and how they share compiled calls.

Every pruned arm starts where IMP's rewound tickets start: from the weights of the
rewind step k (late rewinding), a fresh optimizer and step 0, and trains the same
number of updates. The elastic arms and both controls take the *source* network's
step-k weights, mapped onto the target depth:

* ``interleave`` / ``cycle`` / ... : :func:`jaxsparse.transfer.elastic`'s ticket (mask
  and weights mapped block by block);
* ``shuffle`` (the paper's control): the interleaved ticket with the mask of every
  copied block (blocks 1.. of each stage) shuffled within its layer, same weights;
* ``random``: the interleaved ticket's layer densities, every block layer's mask
  shuffled, same weights: what is left of the ticket when its mask carries only its
  layer-wise densities.

So the elastic arm, ``shuffle`` and ``random`` differ only in their masks.
"""

from __future__ import annotations

import re

import numpy as np

from experiments.elastic.model import PRUNABLE

# what elastic's shuffle control shuffles: prunable leaves of blocks 1.. of each stage
COPIED = r"^stage\d+_block[1-9]\d*/.*kernel$"


def shuffle_within(keys, mask, where: str = PRUNABLE):
    """Each seed's (leading axis) leaves whose path ``where`` finds, shuffled within the
    leaf, their alive counts kept exactly; other leaves as they are. On the host:
    ``jaxsparse.shuffle_mask`` compiles once per leaf shape (minutes on a loaded CPU),
    a numpy permutation takes no time, and the control is the same."""
    import jax

    from jaxsparse.filters import path_str

    flat, treedef = jax.tree_util.tree_flatten_with_path(jax.device_get(mask))
    rngs = [np.random.default_rng(np.asarray(jax.random.key_data(k)).ravel()) for k in keys]
    out = []
    for path, m in flat:
        m = np.asarray(m)
        if re.search(where, path_str(path)):
            new = np.zeros_like(m)
            for i, rng in enumerate(rngs):
                row = np.zeros(m[i].size, bool)
                row[rng.permutation(m[i].size)[: int(m[i].sum())]] = True
                new[i] = row.reshape(m[i].shape)
            m = new
        out.append(m)
    return jax.tree.unflatten(treedef, out)


def distinct(strategies, n_source: int, n_target: int) -> dict[str, str]:
    """``{strategy: the first strategy with the same block mapping}``: a squeeze by one
    block maps ``keep_first`` as ``interleave``, so it is trained once and reported twice."""
    from jaxsparse.transfer import block_mapping

    first: dict[tuple, str] = {}
    out = {}
    for s in strategies:
        m = tuple(block_mapping(n_source, n_target, s))
        out[s] = first.setdefault(m, s)
    return out


def target_arms(src_params, src_mask, target_like, strategies, keys) -> dict:
    """``{arm: (params, mask, start)}`` of one source ticket mapped onto a target depth,
    every leaf a numpy array with a leading seed axis. ``start`` is the dense step-k weights the arm
    starts from (its params are ``start`` where its mask is alive, zero elsewhere).

    Args:
      src_params: the source's step-k weights (every seed).
      src_mask: the source ticket's mask.
      target_like: params of the target depth (shapes; every seed).
      strategies: the elastic strategies to build (``interleave`` first).
      keys: one PRNG key per seed, for the controls' shuffles.
    """
    import functools

    import jax

    from experiments import harness
    from jaxsparse.transfer import elastic

    ones = jax.tree.map(lambda m: np.ones(np.shape(m), bool), src_mask)
    arms = {}
    for s in strategies:
        # jitted: one small program per strategy and depth instead of an eager op per leaf
        mapped = jax.jit(functools.partial(elastic, strategy=s))
        params, mask = jax.device_get(mapped(src_params, src_mask, target_like))
        start = jax.device_get(mapped(src_params, ones, target_like)[0])
        arms[s] = (params, mask, start)
    _, m_int, w_int = arms["interleave"]
    for name, where, stream in (("shuffle", COPIED, 1), ("random", PRUNABLE, 2)):
        mask = shuffle_within(harness.fold(keys, stream), m_int, where)
        arms[name] = (jax.tree.map(lambda w, m: np.where(m, w, 0.0), w_int, mask), mask, w_int)
    return arms


def plan(computed, rounds: int) -> list[list[tuple[str, int]]]:
    """The slots of each compiled call at a target depth: call ``c`` trains IMP's round
    ``c`` in slot 0 (IMP there is sequential); the dense arm (from the target's own
    step-k weights, which call 0 records) and every ``(arm, round r >= 1)`` of the
    source's tickets fill the other slots, as few per call as fit, so that the calls
    have one shape and the program compiles once. Empty slots are ``("pad", 0)``."""
    others = [(arm, r) for r in range(1, rounds + 1) for arm in computed]
    width = -(-(rounds + 2 + len(others)) // (rounds + 1))
    calls = []
    for c in range(rounds + 1):
        slots = [("imp", c)] + ([("dense", 0)] if c == 1 else [])
        while len(slots) < width and others:
            slots.append(others.pop(0))
        calls.append(slots + [("pad", 0)] * (width - len(slots)))
    return calls
