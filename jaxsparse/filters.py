"""Pytree paths and filters: which leaves are prunable, and whether two trees match.

Which leaves are *prunable* is decided by a filter (``where=``), in the spirit of
equinox's filter specs:

* ``kernels`` (the default): every floating leaf with ``ndim >= 2`` not named ``bias``;
* a string: a regular expression searched in the leaf's path (``"Dense_0/kernel"``);
* a callable ``(path: str, leaf) -> bool``;
* ``all_leaves``: every floating leaf.

Paths are ``/``-joined keys (``"params/Dense_0/kernel"``), as every error message names them.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import chex
import jax
import jax.numpy as jnp

Filter = str | Callable[[str, Any], bool] | None


def path_str(path: jax.tree_util.KeyPath) -> str:
    """The ``/``-joined path of a leaf, e.g. ``"params/Dense_0/kernel"``.

    Args:
      path: a key path from ``jax.tree_util.tree_flatten_with_path``.

    Returns:
      The path's keys joined by ``/``.

    Examples:
        >>> tree = {"params": {"Dense_0": {"kernel": jnp.ones(2)}}}
        >>> path_str(jax.tree_util.tree_flatten_with_path(tree)[0][0][0])
        'params/Dense_0/kernel'

    References:
      JAX, "Working with pytrees" (key paths, ``jax.tree_util.keystr``).
    """
    return jax.tree_util.keystr(path, simple=True, separator="/")


def kernels(path: str, leaf: Any) -> bool:
    """Default filter: floating leaves with ``ndim >= 2`` (dense and conv kernels), but
    never a leaf named ``bias``.

    Flax's ``DenseGeneral`` keeps a multi-head projection's bias as ``(heads,
    head_dim)`` (the query, key and value of ``MultiHeadDotProductAttention`` and NNX's
    ``MultiHeadAttention``): two dimensions, but a bias. The name is the path's last key
    (``.../query/bias``; NNX's trailing ``value`` skipped).

    Args:
      path: the leaf's path (only its last key is read).
      leaf: the leaf, or anything with a shape and dtype.

    Returns:
      ``True`` for a floating leaf of rank 2 or more not named ``bias``.

    Examples:
        >>> kernels("w", jnp.ones((3, 2))), kernels("b", jnp.ones(2))
        (True, False)
        >>> kernels("attn/query/bias", jnp.ones((4, 16)))  # heads x head_dim
        False

    References:
      Frankle & Carbin, "The Lottery Ticket Hypothesis", ICLR 2019 (weights of
      dense and conv layers are pruned, biases are not).
    """
    keys = path.split("/")
    name = keys[-2] if keys[-1] == "value" and len(keys) > 1 else keys[-1]
    return is_floating(leaf) and len(jnp.shape(leaf)) >= 2 and name != "bias"


def all_leaves(path: str, leaf: Any) -> bool:
    """Filter that selects every floating leaf (biases and norms too).

    Args:
      path: the leaf's path (unused).
      leaf: the leaf, or anything with a shape and dtype.

    Returns:
      ``True`` for any floating leaf.

    Examples:
        >>> all_leaves("b", jnp.ones(2)), all_leaves("step", jnp.int32(0))
        (True, False)

    References:
      Frankle & Carbin, "The Lottery Ticket Hypothesis", ICLR 2019.
    """
    del path
    return is_floating(leaf)


def is_floating(leaf: Any) -> bool:
    """Whether a leaf (an array, a scalar, a ``ShapeDtypeStruct``) has a floating dtype.

    Only floating leaves are ever scored or pruned; integer leaves (step counters,
    indices) pass through every jaxsparse function untouched.

    Examples:
        >>> is_floating(jnp.ones(2)), is_floating(jnp.arange(2))
        (True, False)

    References:
      Frankle & Carbin, "The Lottery Ticket Hypothesis", ICLR 2019 (weights are pruned).
    """
    return jnp.issubdtype(jnp.result_type(leaf), jnp.floating)


def resolve_filter(where: Filter) -> Callable[[str, Any], bool]:
    """Turns a ``where=`` argument into a ``(path, leaf) -> bool`` predicate.

    Args:
      where: ``None`` (:func:`kernels`), a regex searched in the leaf's path, or a
        callable ``(path, leaf) -> bool`` (returned as is).

    Returns:
      The predicate.

    Raises:
      TypeError: ``where`` is none of the above.

    Examples:
        >>> pred = resolve_filter("Dense_0/")
        >>> pred("Dense_0/bias", jnp.ones(2)), pred("Dense_1/bias", jnp.ones(2))
        (True, False)

    References:
      Equinox filter specs (``eqx.filter``, ``eqx.partition``).
    """
    if where is None:
        return kernels
    if isinstance(where, str):
        pattern = re.compile(where)
        return lambda path, leaf: is_floating(leaf) and pattern.search(path) is not None
    if callable(where):
        return where
    raise TypeError(
        f"where= must be None, a regex string or a callable (path, leaf) -> bool; "
        f"got {type(where).__name__}"
    )


def prunable(tree: chex.ArrayTree, where: Filter = None) -> chex.ArrayTree:
    """A pytree of Python bools mirroring ``tree``: ``True`` where a leaf is prunable.

    Args:
      tree: any pytree of arrays.
      where: the prunable-leaf filter (see the module docstring).

    Returns:
      A pytree of Python bools with ``tree``'s structure.

    Examples:
        >>> params = {"w": jnp.ones((3, 2)), "b": jnp.zeros(2)}
        >>> prunable(params)
        {'b': False, 'w': True}

    References:
      Frankle & Carbin, "The Lottery Ticket Hypothesis", ICLR 2019.
    """
    pred = resolve_filter(where)
    return jax.tree_util.tree_map_with_path(lambda p, x: bool(pred(path_str(p), x)), tree)


def check_structure(
    tree: chex.ArrayTree,
    like: chex.ArrayTree,
    *,
    name: str,
    like_name: str = "params",
    shapes: bool = True,
) -> None:
    """Raises ``ValueError`` if ``tree`` differs from ``like`` in structure or leaf shapes.

    The message names ``name`` and the first differing pytree paths. Shapes only: free
    under ``jit``.

    Args:
      tree: the pytree to check (a mask, scores...).
      like: the pytree it should mirror.
      name: what ``tree`` is called in the message.
      like_name: what ``like`` is called in the message.
      shapes: also compare leaf shapes (off for per-leaf scalars, such as targets).

    Raises:
      ValueError: a missing or unexpected path, or a leaf shape that differs.

    Examples:
        >>> check_structure({"w": jnp.ones(2)}, {"v": jnp.ones(2)}, name="scores")
        Traceback (most recent call last):
        ...
        ValueError: scores does not mirror params: missing paths ['v'], unexpected paths ['w']

    References:
      chex, ``assert_trees_all_equal_structs`` (fail early, name the path).
    """
    t_paths, l_paths = leaf_paths(tree), leaf_paths(like)
    if t_paths != l_paths:
        missing = sorted(set(l_paths) - set(t_paths))
        extra = sorted(set(t_paths) - set(l_paths))
        raise ValueError(
            f"{name} does not mirror {like_name}: missing paths {missing[:5]}, "
            f"unexpected paths {extra[:5]}"
        )
    if not shapes:
        return
    for (path, x), y in zip(
        jax.tree_util.tree_flatten_with_path(tree)[0], jax.tree.leaves(like), strict=True
    ):
        if jnp.shape(x) != jnp.shape(y):
            raise ValueError(
                f"{name} leaf '{path_str(path)}' has shape {jnp.shape(x)}, "
                f"{like_name} have {jnp.shape(y)}"
            )


def leaf_paths(tree: chex.ArrayTree) -> list[str]:
    """The ``/``-joined path of every leaf, in ``jax.tree.leaves`` order.

    Examples:
        >>> leaf_paths({"b": [jnp.ones(1)], "a": jnp.ones(2)})
        ['a', 'b/0']

    References:
      JAX, "Working with pytrees" (key paths).
    """
    return [path_str(p) for p, _ in jax.tree_util.tree_flatten_with_path(tree)[0]]
