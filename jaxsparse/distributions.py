"""Per-leaf target sparsities that reach a global target over the prunable leaves.

Each function returns a pytree of Python floats mirroring ``params`` (``0.0`` on leaves
that are not prunable), ready for ``jaxsparse.prune(scores, mask, targets)``. They
depend on shapes only, so they run once, on the host, at no cost under ``jit``.

All four share one solve (RigL's ``sparse_utils``): every free layer gets density
``eps * p_l`` for a per-layer weight ``p_l``; layers pinned by ``dense=`` or
``overrides=`` keep their density, and ``eps`` is chosen so that the alive weights add
up to ``(1 - sparsity) * N``. A layer whose density would exceed 1 is made dense and
the solve repeated.

* ``uniform``: ``p_l = 1``.
* ``uniform_plus``: uniform, first prunable layer dense, last at most 80% sparse.
* ``er``: ``p_l = (n_in + n_out) / (n_in * n_out)`` over the last two dimensions.
* ``erk``: ``p_l = (sum(shape) / prod(shape)) ** power`` over all dimensions.

"First" and "last" follow ``jax.tree.leaves`` order.

References:
  Evci et al., "Rigging the Lottery", ICML 2020 (ERK); Mocanu et al., "Scalable
  training of artificial neural networks ...", Nat. Commun. 2018 (ER); Liu et al.,
  "The Unreasonable Effectiveness of Random Pruning", ICLR 2022 (uniform+, comparison).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence

import chex
import jax
import numpy as np

from jaxsparse.filters import Filter, path_str, prunable


def _solve(
    params: chex.ArrayTree,
    sparsity: float,
    weight: Callable[[tuple[int, ...]], float],
    where: Filter,
    dense: Sequence[str],
    overrides: Mapping[str, float] | None,
    pin: Callable[[list[str]], dict[str, float]] | None = None,
    floor: Callable[[list[str]], dict[str, float]] | None = None,
    caller: str = "distributions",
) -> chex.ArrayTree:
    """``pin(names)`` fixes densities up front; ``floor(names)`` gives minimum densities,
    enforced like the ceiling of 1: a layer that would fall below its floor is pinned
    there and the solve repeated. ``names`` are the prunable, non-empty leaves in order."""
    if not 0.0 <= float(sparsity) < 1.0:
        raise ValueError(f"{caller}: sparsity must be in [0, 1), got {sparsity}")
    flat = jax.tree_util.tree_flatten_with_path(params)[0]
    sel = jax.tree.leaves(prunable(params, where))
    # zero-size leaves have nothing to prune and no density: they stay at sparsity 0
    sel = [bool(s) and int(np.prod(np.shape(x))) > 0 for (_, x), s in zip(flat, sel)]
    layers = [(path_str(p), np.shape(x)) for (p, x), s in zip(flat, sel) if s]
    if not layers:
        raise ValueError(f"{caller}: no leaf of params is selected by where=")
    names = [n for n, _ in layers]
    size = {n: int(np.prod(s)) for n, s in layers}
    fixed: dict[str, float] = {}
    for pattern in dense:
        hits = [n for n in names if re.search(pattern, n)]
        if not hits:
            raise ValueError(f"{caller}: dense pattern {pattern!r} matches no prunable leaf")
        fixed.update({n: 1.0 for n in hits})
    for pattern, s in (overrides or {}).items():
        if not 0.0 <= float(s) < 1.0:
            raise ValueError(f"{caller}: overrides[{pattern!r}] must be in [0, 1), got {s}")
        hits = [n for n in names if re.search(pattern, n)]
        if not hits:
            raise ValueError(f"{caller}: override pattern {pattern!r} matches no prunable leaf")
        fixed.update({n: 1.0 - float(s) for n in hits})
    if pin is not None:
        fixed.update({n: d for n, d in pin(names).items() if n not in fixed})
    floors = floor(names) if floor is not None else {}
    p = {n: float(weight(s)) for n, s in layers}
    budget = (1.0 - float(sparsity)) * sum(size.values())
    while True:
        free = [n for n in names if n not in fixed]
        rest = budget - sum(fixed[n] * size[n] for n in fixed)
        if not free:
            if abs(rest) > 0.5:  # more than half a weight away from the target
                raise ValueError(
                    f"{caller}: every prunable leaf is pinned (dense= / overrides= / the "
                    f"method's own rules), so the global sparsity {sparsity} is out of reach"
                )
            break
        eps = rest / sum(p[n] * size[n] for n in free)
        if eps < 0:
            raise ValueError(
                f"{caller}: the pinned layers alone exceed the budget of a global sparsity "
                f"of {sparsity}"
            )
        low = [n for n in free if eps * p[n] < floors.get(n, 0.0)]
        if low:
            fixed.update({n: floors[n] for n in low})
            continue
        top = max(p[n] for n in free)
        if eps * top <= 1.0:
            fixed.update({n: eps * p[n] for n in free})
            break
        fixed.update({n: 1.0 for n in free if p[n] == top})
    dens = fixed
    out = iter([1.0 - dens[n] if s else 0.0 for n, s in zip([path_str(p) for p, _ in flat], sel)])
    return jax.tree.map(lambda _: next(out), params)


def uniform(
    params: chex.ArrayTree,
    sparsity: float,
    *,
    where: Filter = None,
    dense: Sequence[str] = (),
    overrides: Mapping[str, float] | None = None,
) -> chex.ArrayTree:
    """The same sparsity on every free prunable leaf (rescaled around pinned ones).

    Args:
      params: the params pytree (only shapes are read).
      sparsity: the global target over the prunable leaves, in ``[0, 1)``.
      where: which leaves are prunable.
      dense: path regexes of prunable leaves kept dense.
      overrides: ``{path_regex: sparsity}`` for leaves pinned at a sparsity.

    Examples:
        >>> t = uniform({"a": jnp.ones((10, 10)), "b": jnp.ones(10)}, 0.9)
        >>> t["a"], t["b"]
        (0.9, 0.0)

    References:
      Frankle & Carbin, ICLR 2019; Evci et al., "Rigging the Lottery", ICML 2020; Liu et
      al., "The Unreasonable Effectiveness of Random Pruning", ICLR 2022.
    """
    return _solve(params, sparsity, lambda s: 1.0, where, dense, overrides, caller="uniform")


def uniform_plus(
    params: chex.ArrayTree,
    sparsity: float,
    *,
    where: Filter = None,
    dense: Sequence[str] = (),
    overrides: Mapping[str, float] | None = None,
) -> chex.ArrayTree:
    """Uniform, with the first prunable leaf dense and the last at most 80% sparse.

    Examples:
        >>> p = {"l0": jnp.ones((8, 100)), "l1": jnp.ones((100, 1000)), "l2": jnp.ones((1000, 4))}
        >>> t = uniform_plus(p, 0.9)
        >>> t["l0"], round(t["l2"], 6)
        (0.0, 0.8)

    References:
      Gale et al., "The State of Sparsity in Deep Neural Networks", 2019; Liu et al., 2022.
    """
    return _solve(
        params,
        sparsity,
        lambda s: 1.0,
        where,
        dense,
        overrides,
        pin=lambda names: {names[0]: 1.0},
        floor=lambda names: {names[-1]: 0.2},
        caller="uniform_plus",
    )


def er(
    params: chex.ArrayTree,
    sparsity: float,
    *,
    where: Filter = None,
    dense: Sequence[str] = (),
    overrides: Mapping[str, float] | None = None,
) -> chex.ArrayTree:
    """Erdős–Rényi: density proportional to ``(n_in + n_out) / (n_in * n_out)``.

    Examples:
        >>> t = er({"a": jnp.ones((100, 100)), "b": jnp.ones((100, 10))}, 0.9)
        >>> t["a"] > t["b"]
        True

    References:
      Mocanu et al., Nat. Commun. 2018; Evci et al., ICML 2020.
    """

    def weight(shape):
        n_in, n_out = shape[-2], shape[-1]
        return (n_in + n_out) / (n_in * n_out)

    return _solve(params, sparsity, weight, where, dense, overrides, caller="er")


def erk(
    params: chex.ArrayTree,
    sparsity: float,
    *,
    power: float = 1.0,
    where: Filter = None,
    dense: Sequence[str] = (),
    overrides: Mapping[str, float] | None = None,
) -> chex.ArrayTree:
    """Erdős–Rényi-Kernel: density proportional to ``(sum(shape) / prod(shape)) ** power``.

    ``power=0`` gives uniform. Layers whose density would exceed 1 are made dense and the
    solve repeated, so the global target is always met.

    Examples:
        >>> p = {"conv": jnp.ones((3, 3, 16, 32)), "fc": jnp.ones((512, 10))}
        >>> t = erk(p, 0.8)
        >>> t["conv"] > t["fc"]
        True

    References:
      Evci et al., "Rigging the Lottery", ICML 2020; Liu et al., ICLR 2022.
    """

    def weight(shape):
        return (sum(shape) / float(np.prod(shape))) ** power

    return _solve(params, sparsity, weight, where, dense, overrides, caller="erk")
