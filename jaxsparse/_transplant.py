"""Moving leaves between two pytrees: comparable paths, the by-path plan and its report,
and placement on the target leaves.

Shared by :mod:`jaxsparse.transfer` (by path) and :mod:`jaxsparse.elastic` (by block).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, NamedTuple

import chex
import jax
import jax.numpy as jnp
import numpy as np

from jaxsparse.filters import path_str

Rename = Mapping[str, str | None]


def _key_path(path: jax.tree_util.KeyPath) -> str:
    # An NNX ``Variable`` (in an ``nnx.State``) flattens to its array under the attribute
    # ``value``; dropping that last key makes a State's paths those of its pure dict and
    # of the matching Linen dict ("head/kernel", not "head/kernel/value").
    last = path[-1] if path else None
    if isinstance(last, jax.tree_util.GetAttrKey) and last.name == "value":
        path = path[:-1]
    return path_str(path)


def flat_paths(tree: chex.ArrayTree) -> tuple[list[str], list[Any], Any]:
    """``(paths, leaves, treedef)`` of a pytree, with the paths used for matching.

    Paths are ``/``-joined keys as everywhere in jaxsparse, except that the trailing
    ``value`` attribute of an NNX ``Variable`` is dropped, so an ``nnx.State``, its pure
    dict (``nnx.to_pure_dict(state)``) and a Linen params dict of the same model share paths.

    Examples:
        >>> flat_paths({"b": jnp.zeros(2), "a": {"k": jnp.ones(1)}})[0]
        ['a/k', 'b']

    References:
      Flax NNX, ``nnx.split`` and ``nnx.to_pure_dict`` (Variables hold ``.value``).
    """
    flat, treedef = jax.tree_util.tree_flatten_with_path(tree)
    return [_key_path(p) for p, _ in flat], [x for _, x in flat], treedef


def check_bool(mask: chex.ArrayTree, name: str) -> None:
    """Raises ``TypeError`` naming the first leaf of ``mask`` that is not ``bool``.

    Examples:
        >>> check_bool({"w": jnp.ones(2)}, "mask")
        Traceback (most recent call last):
        ...
        TypeError: mask leaf 'w' has dtype float32, expected bool

    References:
      chex, ``assert_trees_all_equal_dtypes`` (fail early, name the path).
    """
    paths, leaves, _ = flat_paths(mask)
    for path, m in zip(paths, leaves):
        if jnp.result_type(m) != jnp.bool_:
            raise TypeError(f"{name} leaf '{path}' has dtype {jnp.result_type(m)}, expected bool")


def onto(x: Any, like: Any, dtype: Any = None) -> jax.Array:
    """``x`` (``like``'s shape) as ``dtype`` (default ``like``'s) and, when ``like`` is a
    concrete ``jax.Array``, with its sharding.

    A mask or weight carried onto another model's params must live where that model's
    params live: a concrete ``jax.Array`` target gives its sharding (``device_put``);
    under ``jit`` the value is returned as is and XLA's sharding propagation places it.

    Examples:
        >>> onto(jnp.array([1, 0]), jnp.zeros(2)).dtype, onto(jnp.ones(2), jnp.zeros(2), bool)
        (dtype('float32'), Array([ True,  True], dtype=bool))

    References:
      JAX, "Distributed arrays and automatic parallelization" (``jax.device_put``).
    """
    dtype = jnp.result_type(like) if dtype is None else dtype
    x = jnp.asarray(x)
    if x.dtype != dtype:
        x = x.astype(dtype)
    if isinstance(like, jax.Array) and not isinstance(like, jax.core.Tracer):
        return jax.device_put(x, like.sharding)
    return x


def dense_like(like: Any) -> jax.Array:
    """An all-``True`` mask leaf built from the param leaf ``like`` (keeps its sharding).

    Examples:
        >>> dense_like(jnp.zeros((2, 1)))
        Array([[ True],
               [ True]], dtype=bool)

    References:
      Frankle & Carbin, "The Lottery Ticket Hypothesis", ICLR 2019 (unpruned leaves).
    """
    return jnp.ones_like(like, dtype=bool)


class TransferReport(NamedTuple):
    """What :func:`transfer_mask` / :func:`apply_ticket` did, leaf by leaf.

    Attributes:
      matched: ``(source path, target path, weights)`` of each leaf carried over.
      dense: ``(target path, weights)`` of each target leaf the source lacks (left
        dense, e.g. a new task head).
      dropped: ``(source path, weights)`` of each source leaf with no place in the
        target (e.g. the old task head).

    ``str(report)`` is a table, one row a leaf, and a summary line.

    Examples:
        >>> report = TransferReport(matched=(("a", "a", 6),), dense=(("head", 4),),
        ...                         dropped=(("old", 2),))
        >>> print(report)
        status   source  target  weights
        matched  a       a             6
        dense    -       head          4
        dropped  old     -             2
        matched 1 leaves (6 weights), left dense 1 (4), dropped 1 (2)

    References:
      Chen et al., "The Lottery Ticket Hypothesis for Pre-trained BERT Networks",
      NeurIPS 2020 (masks carried across tasks; task heads differ).
    """

    matched: tuple[tuple[str, str, int], ...]
    dense: tuple[tuple[str, int], ...]
    dropped: tuple[tuple[str, int], ...]

    def __str__(self) -> str:
        rows = [("status", "source", "target", "weights")]
        rows += [("matched", s, t, str(n)) for s, t, n in self.matched]
        rows += [("dense", "-", t, str(n)) for t, n in self.dense]
        rows += [("dropped", s, "-", str(n)) for s, n in self.dropped]
        widths = [max(len(r[i]) for r in rows) for i in range(4)]
        lines = [
            f"{a:<{widths[0]}}  {b:<{widths[1]}}  {c:<{widths[2]}}  {d:>{widths[3]}}"
            for a, b, c, d in rows
        ]

        def total(part):
            return sum(r[-1] for r in part)

        lines.append(
            f"matched {len(self.matched)} leaves ({total(self.matched)} weights), "
            f"left dense {len(self.dense)} ({total(self.dense)}), "
            f"dropped {len(self.dropped)} ({total(self.dropped)})"
        )
        return "\n".join(lines)


def _size(x: Any) -> int:
    return int(np.prod(jnp.shape(x)))


def _compile_rename(rename: Rename | None, who: str) -> list[tuple[re.Pattern, str | None]]:
    if rename is None:
        return []
    if not isinstance(rename, Mapping):
        raise TypeError(f"{who}: rename= must be a mapping {{regex: template}}, got {rename!r}")
    out = []
    for pattern, template in rename.items():
        if template is not None and not isinstance(template, str):
            raise TypeError(f"{who}: rename[{pattern!r}] must be a str or None, got {template!r}")
        try:
            out.append((re.compile(pattern), template))
        except (re.error, TypeError) as e:
            raise ValueError(f"{who}: rename key {pattern!r} is not a valid regex: {e}") from None
    return out


def plan_by_path(source, target, rename, missing, extra, who):
    """For each target leaf of ``target`` the index of its source leaf in ``source`` (or
    ``None``), and the :class:`TransferReport`; the rules are those of
    :func:`jaxsparse.transfer.transfer_mask` (``who`` starts every error message).

    Examples:
        >>> plan_by_path({"a": jnp.ones(2)}, {"a": jnp.ones(2), "b": jnp.ones(1)},
        ...              None, "dense", "drop", "demo")[0]
        [0, None]

    References:
      Chen et al., "The Lottery Ticket Hypothesis for Pre-trained BERT Networks",
      NeurIPS 2020 (masks carried across tasks by layer).
    """
    if missing not in ("dense", "raise"):
        raise ValueError(f"{who}: missing= must be 'dense' or 'raise', got {missing!r}")
    if extra not in ("drop", "raise"):
        raise ValueError(f"{who}: extra= must be 'drop' or 'raise', got {extra!r}")
    rules = _compile_rename(rename, who)
    s_paths, s_leaves, _ = flat_paths(source)
    t_paths, t_leaves, _ = flat_paths(target)
    by_target: dict[str, int] = {}
    dropped, unplaced = [], []
    for i, path in enumerate(s_paths):
        new: str | None = path
        for pattern, template in rules:
            if pattern.search(path):  # the first pattern that matches decides
                new = None if template is None else pattern.sub(template, path)
                break
        if new is None:
            dropped.append(i)
            continue
        if new in by_target:
            raise ValueError(
                f"{who}: source leaves '{s_paths[by_target[new]]}' and '{path}' both map "
                f"to target path '{new}'"
            )
        by_target[new] = i
    t_index = {p: j for j, p in enumerate(t_paths)}
    for new, i in by_target.items():
        if new not in t_index:
            unplaced.append(i)
    if extra == "raise" and unplaced:
        names = [f"'{s_paths[i]}'" for i in unplaced[:10]]
        raise ValueError(
            f"{who}: source leaves with no target leaf (extra='raise'): {', '.join(names)}"
        )
    sources: list[int | None] = []
    matched, dense = [], []
    for j, path in enumerate(t_paths):
        src = by_target.get(path)
        sources.append(src)
        if src is None:
            dense.append((path, _size(t_leaves[j])))
            continue
        s_shape, t_shape = jnp.shape(s_leaves[src]), jnp.shape(t_leaves[j])
        if s_shape != t_shape:
            raise ValueError(
                f"{who}: source leaf '{s_paths[src]}' has shape {s_shape} but target leaf "
                f"'{path}' has shape {t_shape}"
            )
        matched.append((s_paths[src], path, _size(t_leaves[j])))
    if missing == "raise" and dense:
        names = [f"'{p}'" for p, _ in dense[:10]]
        raise ValueError(
            f"{who}: target leaves with no source leaf (missing='raise'): {', '.join(names)}"
        )
    gone = sorted(dropped + unplaced)
    report = TransferReport(
        matched=tuple(matched),
        dense=tuple(dense),
        dropped=tuple((s_paths[i], _size(s_leaves[i])) for i in gone),
    )
    return sources, report
