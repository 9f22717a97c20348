"""Data parallelism on JAX's own engine: ``pmap`` replicas and ``jit`` over a ``Mesh``.

Nothing here is home-made communication. Under ``pmap``, give
:func:`jaxsparse.make_train_fn` an ``axis_name``: gradients are ``pmean``-ed, every
replica applies the identical update, and :func:`jaxsparse.prune` (a pure function of
the replicated params) derives the identical mask on every device. Under ``jit`` with a
``Mesh``, shard the batch on a ``"data"`` axis (``make_train_fn(batch_sharding=...)``)
and place params and masks with :func:`shard_like`; XLA inserts the collectives, and the
counting passes of global pruning reduce across shards without gathering the params.

Across processes (a TPU pod slice, a multi-GPU cluster, or several processes on one
machine), every process calls ``jax.distributed.initialize()`` first and then runs the
same program: :func:`data_mesh` spans all processes' devices, each process feeds only
its own rows of the data (:func:`process_rows`, :func:`shard_batch`), and
:func:`to_host` fetches a global result on every process. Masks come out identical on
every process (they are one global array), and :mod:`jaxsparse.checkpoint` saves and
restores through orbax with every process taking part.
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

    Examples:
        >>> mesh = data_mesh()
        >>> mesh.axis_names, mesh.size == jax.device_count()
        (('data',), True)

    References:
      JAX, "Distributed arrays and automatic parallelization" (jax.sharding.Mesh,
      NamedSharding).
    """
    devs = np.asarray(jax.devices() if devices is None else list(devices))
    return Mesh(devs, (axis,))


def process_rows(n: int, sharding: NamedSharding) -> slice:
    """The rows of an ``n``-row global array, split on its leading axis by ``sharding``,
    that this process's devices hold: the rows it feeds to :func:`shard_batch`.

    With :func:`data_mesh` (devices in ``jax.devices()`` order, grouped by process) and
    :func:`batch_sharding`, process i of P holds rows ``[i * n / P, (i + 1) * n / P)``.

    Args:
      n: the global number of rows.
      sharding: how the global array is split, e.g. ``batch_sharding(data_mesh())``.

    Returns:
      A ``slice`` of the global rows.

    Raises:
      ValueError: this process's rows are not one contiguous block (a mesh whose
        devices interleave processes).

    Examples:
        >>> process_rows(16, batch_sharding(data_mesh()))  # one process holds all rows
        slice(0, 16, None)

    References:
      JAX, "Distributed data loading" (each process loads the rows its devices hold).
    """
    spans = {
        idx[0].indices(n)[:2]
        for idx in sharding.addressable_devices_indices_map((n,)).values()
        if idx is not None
    }
    lo, hi = min(a for a, _ in spans), max(b for _, b in spans)
    if sum(b - a for a, b in spans) != hi - lo:
        raise ValueError(
            f"process_rows: process {jax.process_index()} holds rows {sorted(spans)} of {n}, "
            "not one contiguous block; order the mesh's devices by process"
        )
    return slice(lo, hi)


def shard_batch(local: chex.ArrayTree, sharding: NamedSharding) -> chex.ArrayTree:
    """Global arrays, split by ``sharding``, from the rows this process holds.

    Each process passes only its own rows (``data[process_rows(n, sharding)]``); every
    leaf becomes one ``jax.Array`` of the global shape whose shards live on the devices
    of all processes (``jax.make_array_from_process_local_data``). On one process it is
    ``jax.device_put``.

    Args:
      local: a pytree of host arrays, this process's rows on the leading axis.
      sharding: the global arrays' sharding, e.g. ``batch_sharding(data_mesh())``.

    Returns:
      The pytree of global arrays.

    Examples:
        >>> mesh = data_mesh()
        >>> data = {"x": np.arange(32.0).reshape(16, 2)}
        >>> rows = process_rows(16, batch_sharding(mesh))
        >>> batch = shard_batch(jax.tree.map(lambda a: a[rows], data), batch_sharding(mesh))
        >>> batch["x"].shape, batch["x"].sharding.spec
        ((16, 2), P('data',))

    References:
      JAX, "Distributed data loading" (``jax.make_array_from_process_local_data``).
    """
    return jax.tree.map(
        lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)), local
    )


def to_host(tree: chex.ArrayTree) -> chex.ArrayTree:
    """Every leaf as a NumPy array holding its *global* value, on every process.

    ``jax.device_get`` for arrays spread over several processes: a leaf whose shards are
    all here, or that is replicated, is copied; one split across processes is gathered
    with ``jax.experimental.multihost_utils.process_allgather``, a collective, so every
    process must call this with the same pytree (in the same order as its other
    collectives).

    Args:
      tree: a pytree of ``jax.Array`` (any sharding), NumPy arrays or scalars.

    Returns:
      The pytree with NumPy leaves.

    Examples:
        >>> x = jax.device_put(jnp.arange(8), batch_sharding(data_mesh()))
        >>> to_host({"x": x})["x"]
        array([0, 1, 2, 3, 4, 5, 6, 7], dtype=int32)

    References:
      JAX, "Distributed data loading" (multi-process arrays, ``process_allgather``).
    """

    def one(x):
        if isinstance(x, jax.Array) and not (x.is_fully_addressable or x.is_fully_replicated):
            from jax.experimental import multihost_utils

            return np.asarray(multihost_utils.process_allgather(x, tiled=True))
        return np.asarray(x)

    return jax.tree.map(one, tree)


def batch_sharding(mesh: Mesh, axis: str = "data") -> NamedSharding:
    """The sharding of a batch split along its leading axis over ``axis``.

    Args:
      mesh: the device mesh, e.g. from :func:`data_mesh`.
      axis: the mesh axis the leading dimension is split over.

    Returns:
      A ``NamedSharding`` with ``PartitionSpec(axis)``.

    Examples:
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

    Examples:
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

    Examples:
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

    Examples:
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

    Examples:
        >>> unreplicate(replicate({"w": jnp.arange(3)}, 2))["w"]
        array([0, 1, 2], dtype=int32)

    References:
      JAX, "Parallel evaluation in JAX" (``jax.pmap``, one replica per device).
    """
    return jax.tree.map(lambda x: x[0], tree)
