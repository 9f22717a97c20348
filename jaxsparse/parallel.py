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

from jaxsparse.filters import check_structure


def data_mesh(devices: Sequence[jax.Device] | None = None, axis: str = "data") -> Mesh:
    """A one-axis ``Mesh`` over ``devices`` (default: all devices of all hosts).

    Example:
        >>> mesh = data_mesh()
        >>> mesh.axis_names, mesh.size == jax.device_count()
        (('data',), True)

    References:
      JAX, "Distributed arrays and automatic parallelization" (jax.sharding.Mesh,
      NamedSharding).
    """
    devs = np.asarray(jax.devices() if devices is None else list(devices))
    return Mesh(devs, (axis,))


def batch_sharding(mesh: Mesh, axis: str = "data") -> NamedSharding:
    """The sharding of a batch split along its leading axis over ``axis``.

    Args:
      mesh: the device mesh, e.g. from :func:`data_mesh`.
      axis: the mesh axis the leading dimension is split over.

    Returns:
      A ``NamedSharding`` with ``PartitionSpec(axis)``.

    Example:
        >>> batch = jax.device_put(jnp.ones((16, 3)), batch_sharding(data_mesh()))
        >>> batch.sharding.shard_shape(batch.shape) == (16 // jax.device_count(), 3)
        True

    References:
      JAX, "Distributed arrays and automatic parallelization" (jax.sharding.Mesh,
      NamedSharding).
    """
    return NamedSharding(mesh, PartitionSpec(axis))


def replicated(mesh: Mesh) -> NamedSharding:
    """A sharding that keeps a full copy on every device of ``mesh``.

    Args:
      mesh: the device mesh.

    Returns:
      A ``NamedSharding`` with an empty ``PartitionSpec``.

    Example:
        >>> x = jax.device_put(jnp.ones(4), replicated(data_mesh()))
        >>> x.sharding.is_fully_replicated
        True

    References:
      JAX, "Distributed arrays and automatic parallelization" (jax.sharding.Mesh,
      NamedSharding).
    """
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

    References:
      JAX, "Distributed arrays and automatic parallelization" (jax.sharding.Mesh,
      NamedSharding).
    """
    check_structure(tree, params, name="shard_like: tree")
    return jax.tree.map(lambda x, p: jax.device_put(x, p.sharding), tree, params)


def replicate(tree: chex.ArrayTree, n: int | None = None) -> chex.ArrayTree:
    """Stacks ``n`` copies (default: local device count) on a leading axis, for ``pmap``.

    Example:
        >>> replicate({"w": jnp.ones(3)}, 2)["w"].shape
        (2, 3)

    References:
      JAX, "Parallel evaluation in JAX" (``jax.pmap``, one replica per device).
    """
    n = jax.local_device_count() if n is None else n
    return jax.tree.map(lambda x: np.broadcast_to(np.asarray(x), (n, *np.shape(x))), tree)


def unreplicate(tree: chex.ArrayTree) -> chex.ArrayTree:
    """The first replica of a ``pmap``-ed pytree.

    Args:
      tree: a pytree whose leaves have a leading replica axis.

    Returns:
      The pytree with that axis indexed at 0.

    Example:
        >>> unreplicate(replicate({"w": jnp.arange(3)}, 2))["w"]
        array([0, 1, 2], dtype=int32)

    References:
      JAX, "Parallel evaluation in JAX" (``jax.pmap``, one replica per device).
    """
    return jax.tree.map(lambda x: x[0], tree)
