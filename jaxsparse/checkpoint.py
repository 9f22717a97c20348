"""Checkpoints on orbax: whole train states, IMP rounds, and small lottery-ticket files.

A checkpoint is a directory holding ``arrays/`` (written by orbax) and a JSON record
(``jaxsparse.json``) listing every leaf's pytree path, shape and dtype, the SHA-256 digest
of every stored array, and the user's JSON ``extra`` (states) or ``metadata`` (tickets).

Writes are atomic: everything goes to a hidden sibling ``.NAME.tmp-*`` first and the
directory is renamed into place only when complete, so a crash (even ``SIGKILL``) never
leaves a directory that looks complete. Reads check the record against ``like`` (paths,
shapes, dtypes) before reading and the digests after, so a partial, corrupt or
mismatched checkpoint raises instead of yielding a silently wrong state.

Across processes (a TPU pod slice, a multi-GPU cluster, ``jax.distributed`` on one
machine) every process calls the same function with the same arguments: each writes its
own shards through orbax, process 0 writes the record and renames the directory into
place once all have finished, and none returns before that. The directory must be on a
file system all processes share, with an atomic rename. A restore puts each array on its
``like`` leaf's sharding, whichever processes' devices that spans. The digests are taken
on the host: an array split across processes is gathered to every process once to save
it and once to check it (``jaxsparse.parallel.to_host``), which bounds the model size by
one host's memory.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import chex
import jax
import numpy as np

from jaxsparse._storage import (
    PathLike,
    _check_like,
    _complete_rounds,
    _describe,
    _place,
    _read_arrays,
    _read_record,
    _write,
)
from jaxsparse.filters import path_str
from jaxsparse.masks import check_mask, pack, unpack
from jaxsparse.parallel import to_host


def save_state(directory: PathLike, state: Any, *, extra: dict | None = None) -> None:
    """Saves every pytree leaf of a train state (and a JSON ``extra``) atomically.

    Params, mask, rewind snapshot, optimizer state, ``step`` and ``round`` of a
    :class:`jaxsparse.SparseTrainState` are all leaves, so all are saved exactly; a
    batched state (e.g. from ``jax.vmap`` over seeds) works the same. Static fields
    (``apply_fn``, ``tx``, ``where``) are not saved: :func:`load_state` takes them from
    ``like``. An existing ``directory`` is replaced only once the new one is complete.

    Args:
      directory: the checkpoint directory to create or replace.
      state: any pytree of arrays (``jax.Array`` of any sharding, numpy, PRNG keys).
      extra: a JSON-serialisable dict stored alongside (e.g. metrics, config).

    Raises:
      TypeError: ``extra`` is not JSON-serialisable.

    Examples:
        >>> import tempfile, pathlib
        >>> d = pathlib.Path(tempfile.mkdtemp()) / "ckpt"
        >>> state = js.SparseTrainState.create(
        ...     apply_fn=None, params={"w": jnp.ones((2, 3))}, tx=optax.adam(1e-3))
        >>> save_state(d, state, extra={"epoch": 1})
        >>> restored, extra = load_state(d, state)
        >>> extra, bool((restored.params["w"] == 1).all())
        ({'epoch': 1}, True)

    References:
      Orbax checkpointing, https://orbax.readthedocs.io.
    """
    flat = jax.tree_util.tree_flatten_with_path(state)[0]
    leaves = [_describe(path_str(p), x) for p, x in flat]
    _write(directory, "state", leaves, [x for _, x in flat], extra=extra or {})


def load_state(directory: PathLike, like: Any) -> tuple[Any, dict]:
    """Restores a state saved by :func:`save_state` onto the structure of ``like``.

    Structure, static fields, dtypes and *shardings* come from ``like`` (a state built
    the same way, e.g. by ``SparseTrainState.create``, or its ``jax.eval_shape``; its
    values are ignored): a leaf of ``like`` sharded over a ``Mesh`` comes back with that
    ``NamedSharding``. Values are bit-exact, checked against the digests recorded at save.

    Args:
      directory: a directory written by :func:`save_state`.
      like: a pytree with the saved structure, leaf shapes and dtypes.

    Returns:
      ``(state, extra)``.

    Raises:
      FileNotFoundError: ``directory`` does not exist.
      ValueError: the checkpoint is partial or corrupt, or its structure, a shape or a
        dtype differs from ``like`` (the message names the directory and the path).

    Examples:
        >>> import tempfile, pathlib
        >>> d = pathlib.Path(tempfile.mkdtemp()) / "ckpt"
        >>> save_state(d, {"w": jnp.arange(3.0)})
        >>> load_state(d, {"w": jnp.zeros(3)})
        ({'w': Array([0., 1., 2.], dtype=float32)}, {})

    References:
      Orbax checkpointing, https://orbax.readthedocs.io.
    """
    flat, treedef = jax.tree_util.tree_flatten_with_path(like)
    record = _read_record(directory, "state")
    _check_like(directory, record["leaves"], [_describe(path_str(p), x) for p, x in flat])
    names = [d["path"] for d in record["leaves"]]
    leaves = _read_arrays(directory, record, [x for _, x in flat], names)
    return jax.tree.unflatten(treedef, leaves), record["extra"]


def save_round(
    root: PathLike,
    round_index: int,
    state: Any,
    *,
    extra: dict | None = None,
    keep: int | None = None,
) -> Path:
    """Saves ``state`` as ``root/round_{round_index:04d}`` (see :func:`save_state`).

    Args:
      root: the run's checkpoint folder (created if needed).
      round_index: the round number, >= 0.
      state: the state to save.
      extra: a JSON-serialisable dict stored with it.
      keep: if given, afterwards delete all but the ``keep`` highest complete rounds.

    Returns:
      The round's directory.

    Raises:
      ValueError: a negative ``round_index`` or ``keep < 1``.

    Examples:
        >>> import tempfile, pathlib
        >>> root = tempfile.mkdtemp()
        >>> for r in range(3):
        ...     _ = save_round(root, r, {"w": jnp.full(2, r)}, keep=2)
        >>> latest_round(root), sorted(p.name for p in pathlib.Path(root).iterdir())
        (2, ['round_0001', 'round_0002'])

    References:
      Orbax checkpointing (orbax.checkpoint), https://orbax.readthedocs.io.
    """
    if round_index < 0:
        raise ValueError(f"save_round: round_index must be >= 0, got {round_index}")
    if keep is not None and keep < 1:
        raise ValueError(f"save_round: keep must be >= 1, got {keep}")
    directory = Path(root) / f"round_{round_index:04d}"
    save_state(directory, state, extra=extra)
    if keep is not None and jax.process_index() == 0:
        for r in _complete_rounds(root)[:-keep]:
            shutil.rmtree(Path(root) / f"round_{r:04d}", ignore_errors=True)
    return directory


def latest_round(root: PathLike) -> int | None:
    """The highest complete round under ``root``; temp and incomplete dirs are ignored.

    Returns:
      The round index, or ``None`` if ``root`` is missing or holds no complete round.

    Examples:
        >>> import tempfile
        >>> latest_round(tempfile.mkdtemp()) is None
        True

    References:
      Orbax checkpointing (orbax.checkpoint), https://orbax.readthedocs.io.
    """
    rounds = _complete_rounds(root)
    return rounds[-1] if rounds else None


def restore_latest(root: PathLike, like: Any) -> tuple[int, Any, dict] | None:
    """Loads the highest complete round under ``root`` onto ``like`` (see :func:`load_state`).

    Returns:
      ``(round_index, state, extra)``, or ``None`` when there is nothing to resume.

    Raises:
      ValueError: the latest complete round is corrupt or does not match ``like``; it
        is never skipped silently in favour of an older one.

    Examples:
        >>> import tempfile
        >>> root = tempfile.mkdtemp()
        >>> restore_latest(root, {"w": jnp.zeros(2)}) is None
        True
        >>> _ = save_round(root, 3, {"w": jnp.ones(2)}, extra={"loss": 0.5})
        >>> restore_latest(root, {"w": jnp.zeros(2)})
        (3, {'w': Array([1., 1.], dtype=float32)}, {'loss': 0.5})

    References:
      Orbax checkpointing (orbax.checkpoint), https://orbax.readthedocs.io.
    """
    r = latest_round(root)
    if r is None:
        return None
    state, extra = load_state(Path(root) / f"round_{r:04d}", like)
    return r, state, extra


def save_ticket(
    directory: PathLike,
    mask: chex.ArrayTree,
    params: chex.ArrayTree,
    metadata: dict | None = None,
) -> None:
    """Saves a lottery ticket compactly: the bit-packed mask and the *alive* weights.

    Each mask leaf is stored with :func:`jaxsparse.pack` (1 bit a weight); of ``params``
    (the initial or rewound weights) only the entries where the mask is ``True`` are
    stored, in row-major order, so a ticket of n weights at sparsity s takes about
    ``n / 8 + (1 - s) * n * itemsize`` bytes. Pruned weights are not stored:
    :func:`load_ticket` returns them as exactly 0.

    Args:
      directory: the ticket directory to create or replace (atomically).
      mask: a bool pytree mirroring ``params``.
      params: the ticket's weights.
      metadata: a JSON-serialisable dict (sparsity, round, config...).

    Raises:
      ValueError: ``mask`` does not mirror ``params`` (names the path).
      TypeError: a non-bool mask leaf, or ``metadata`` not JSON-serialisable.

    Examples:
        >>> import tempfile, pathlib
        >>> d = pathlib.Path(tempfile.mkdtemp()) / "ticket"
        >>> params = {"w": jnp.arange(1.0, 7.0).reshape(2, 3)}
        >>> save_ticket(d, {"w": params["w"] > 4}, params, {"round": 3})
        >>> mask, p, meta = load_ticket(d, params)
        >>> p["w"], meta
        (Array([[0., 0., 0.],
               [0., 5., 6.]], dtype=float32), {'round': 3})

    References:
      Frankle & Carbin, "The Lottery Ticket Hypothesis", ICLR 2019 (a ticket is the
      mask and the initial weights).
    """
    check_mask(mask, params, name="save_ticket: mask")
    flat = jax.tree_util.tree_flatten_with_path(params)[0]
    leaves = [_describe(path_str(p), x) for p, x in flat]
    arrays = []
    for (_, x), m, bits in zip(flat, jax.tree.leaves(mask), jax.tree.leaves(pack(mask))):
        arrays += [bits, np.asarray(to_host(x))[np.asarray(to_host(m))]]
    _write(directory, "ticket", leaves, arrays, metadata=metadata or {})


def load_ticket(
    directory: PathLike, like_params: chex.ArrayTree
) -> tuple[chex.ArrayTree, chex.ArrayTree, dict]:
    """Loads a ticket saved by :func:`save_ticket` onto a model's params.

    Args:
      directory: a directory written by :func:`save_ticket`.
      like_params: params of the target model (values ignored; structure, shapes and
        dtypes must match; the shardings of ``jax.Array`` leaves are kept).

    Returns:
      ``(mask, params, metadata)``; ``params`` is exactly 0 where the mask is ``False``.

    Raises:
      FileNotFoundError: ``directory`` does not exist.
      ValueError: a partial or corrupt ticket, or ``like_params`` whose structure, a
        shape or a dtype differs (the message names the pytree path).

    Examples:
        >>> import tempfile, pathlib
        >>> d = pathlib.Path(tempfile.mkdtemp()) / "ticket"
        >>> save_ticket(d, {"w": jnp.array([True, False])}, {"w": jnp.array([1.0, 2.0])})
        >>> load_ticket(d, {"w": jnp.zeros(3)})
        Traceback (most recent call last):
        ...
        ValueError: ...leaf 'w' has shape (2,) in the checkpoint, (3,) in like

    References:
      Frankle & Carbin, "The Lottery Ticket Hypothesis", ICLR 2019 (a ticket is the
      mask and the initial weights).
    """
    flat, treedef = jax.tree_util.tree_flatten_with_path(like_params)
    record = _read_record(directory, "ticket")
    described = [_describe(path_str(p), x) for p, x in flat]
    _check_like(directory, record["leaves"], described)
    names = [f"{d['path']} ({part})" for d in described for part in ("mask", "values")]
    arrays = _read_arrays(directory, record, [None] * len(names), names)
    bits = jax.tree.unflatten(treedef, arrays[0::2])
    shapes = jax.tree.unflatten(
        treedef, [jax.ShapeDtypeStruct(d["shape"], bool) for d in described]
    )
    masks, params = [], []
    for d, m, alive, (_, x) in zip(
        described, jax.tree.leaves(unpack(bits, shapes)), arrays[1::2], flat
    ):
        m = np.asarray(m)
        if int(m.sum()) != alive.shape[0]:
            raise ValueError(
                f"ticket at {directory} is corrupt: leaf '{d['path']}' has {int(m.sum())} "
                f"alive weights in its mask but {alive.shape[0]} stored values"
            )
        dense = np.zeros(m.shape, alive.dtype)
        dense[m] = alive
        masks.append(_place(m, x))
        params.append(_place(dense, x))
    return (
        jax.tree.unflatten(treedef, masks),
        jax.tree.unflatten(treedef, params),
        record["metadata"],
    )
