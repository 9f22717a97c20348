"""Data parallelism on JAX's own engine: ``pmap`` replicas and ``jit`` over a ``Mesh``.

Nothing here is home-made communication. Under ``pmap``, give
:func:`jaxsparse.make_train_fn` an ``axis_name``: gradients are ``pmean``-ed, every
replica applies the identical update, and :func:`jaxsparse.prune` (a pure function of
the replicated params) derives the identical mask on every device. Under ``jit`` with a
``Mesh``, shard the batch on a ``"data"`` axis (``make_train_fn(batch_sharding=...)``)
and place params and masks with :func:`shard_like`; XLA inserts the collectives, and the
counting passes of global pruning reduce across shards without gathering the params.

On a multi-host TPU pod slice or multi-GPU cluster, call ``jax.distributed.initialize()``
on every host first, then build the mesh over ``jax.devices()`` (all hosts' devices) with
:func:`data_mesh`; the same program runs unchanged, and orbax
(:mod:`jaxsparse.checkpoint`) writes sharded checkpoints.
"""

from __future__ import annotations

from collections.abc import Sequence

import chex
import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from jaxsparse.masks import check_structure


def data_mesh(devices: Sequence[jax.Device] | None = None, axis: str = "data") -> Mesh:
    """A one-axis ``Mesh`` over ``devices`` (default: all devices of all hosts).

    Example:
        >>> mesh = data_mesh()
        >>> mesh.axis_names, mesh.size == jax.device_count()
        (('data',), True)
    """
    devs = np.asarray(jax.devices() if devices is None else list(devices))
    return Mesh(devs, (axis,))


def batch_sharding(mesh: Mesh, axis: str = "data") -> NamedSharding:
    """The sharding of a batch split along its leading axis over ``axis``."""
    return NamedSharding(mesh, PartitionSpec(axis))


def replicated(mesh: Mesh) -> NamedSharding:
    """A sharding that keeps a full copy on every device of ``mesh``."""
    return NamedSharding(mesh, PartitionSpec())


def shard_like(tree: chex.ArrayTree, params: chex.ArrayTree) -> chex.ArrayTree:
    """Places each leaf of ``tree`` (a mask, scores) with its params leaf's sharding.

    Raises:
      ValueError: ``tree`` does not mirror ``params`` (naming the path).

    Example:
        >>> mesh = data_mesh()
        >>> p = jax.device_put({"w": jnp.ones((8, 2))}, batch_sharding(mesh))
        >>> m = shard_like(js.mask_like(p), p)
        >>> m["w"].sharding == p["w"].sharding
        True
    """
    check_structure(tree, params, name="shard_like: tree")
    return jax.tree.map(lambda x, p: jax.device_put(x, p.sharding), tree, params)


def replicate(tree: chex.ArrayTree, n: int | None = None) -> chex.ArrayTree:
    """Stacks ``n`` copies (default: local device count) on a leading axis, for ``pmap``.

    Example:
        >>> replicate({"w": jnp.ones(3)}, 2)["w"].shape
        (2, 3)
    """
    n = jax.local_device_count() if n is None else n
    return jax.tree.map(lambda x: np.broadcast_to(np.asarray(x), (n, *np.shape(x))), tree)


def unreplicate(tree: chex.ArrayTree) -> chex.ArrayTree:
    """The first replica of a ``pmap``-ed pytree."""
    return jax.tree.map(lambda x: x[0], tree)
