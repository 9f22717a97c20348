"""Sparse inference export: a masked model's Dense kernels as sparse matrices.

After pruning, ``to_sparse`` turns the chosen 2-D kernels of a params pytree into
``jax.experimental.sparse`` matrices holding only the alive weights (or an N:M packed
form); every other leaf stays a dense array with its pruned entries zeroed. ``matmul``
and ``dense`` take either kind of kernel, so one model function serves both, and
``mlp_apply`` runs a chain of Dense layers::

    sp = js.export.to_sparse(params, mask, format="bcsr")     # once, outside jit
    logits = jax.jit(js.export.mlp_apply)(sp, x)              # == masked dense model

Layouts (what a user reading a leaf should know):

* ``"bcoo"``: a ``BCOO`` of the kernel as it is, ``(in, out)``; ``x @ k`` works as well.
* ``"bcsr"``: a ``BCSR`` of the *transposed* kernel, ``(out, in)`` (torch's ``weight``
  layout): JAX multiplies a BCSR only from the left, and on CPU ``BCSR @ dense`` runs a
  native CSR kernel, while ``BCOO`` products are a gather and a scatter-add.
* ``"nm"``: :class:`~jaxsparse.nmpack.NMPacked`, groups along the input axis ``0``.

Each sparse matrix stores exactly the mask's alive entries (an alive weight equal to 0.0
is kept), so ``nse`` is the alive count. Export reads the mask on the host: the number of
stored entries is a shape, so ``to_sparse`` runs outside ``jit`` (the apply path jits).

Conv kernels (rank > 2) are *not* exported sparse: JAX has no sparse convolution, and an
im2col rewrite would materialise every patch of the activations to save a fraction of a
small kernel. They stay dense (masked); asking for one with ``where=`` is an error.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import chex
import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import sparse

from jaxsparse.filters import Filter, is_floating, path_str, resolve_filter
from jaxsparse.masks import check_mask, zero_pruned
from jaxsparse.nmpack import NMPacked, nm_compress, nm_decompress, nm_matmul

__all__ = [
    "NMPacked",
    "dense",
    "dense_kernels",
    "matmul",
    "mlp_apply",
    "nm_compress",
    "nm_decompress",
    "nm_matmul",
    "to_dense",
    "to_sparse",
]

FORMATS = ("bcoo", "bcsr", "nm")

# a kernel as to_sparse leaves it: dense, BCOO, BCSR (transposed) or N:M-packed
Kernel = jax.Array | sparse.BCOO | sparse.BCSR | NMPacked


def dense_kernels(path: str, leaf: Any) -> bool:
    """Default ``where=`` of :func:`to_sparse`: floating leaves of rank exactly 2.

    Args:
      path: the leaf's path (unused).
      leaf: the leaf, or anything with a shape and dtype.

    Returns:
      ``True`` for a floating 2-D leaf (a Dense kernel); conv kernels are left dense.

    Examples:
        >>> js.export.dense_kernels("w", jnp.ones((3, 2)))
        True

    References:
      Han et al., "Deep Compression", ICLR 2016 (pruned Dense layers stored sparse).
    """
    del path
    return is_floating(leaf) and len(jnp.shape(leaf)) == 2


def _bcoo(kernel: np.ndarray, alive: np.ndarray) -> sparse.BCOO:
    idx = np.argwhere(alive).astype(np.int32)  # row-major: sorted, unique
    data = jnp.asarray(kernel[alive])
    return sparse.BCOO(
        (data, jnp.asarray(idx)), shape=kernel.shape, indices_sorted=True, unique_indices=True
    )


def _bcsr_transposed(kernel: np.ndarray, alive: np.ndarray) -> sparse.BCSR:
    kt, at = kernel.T, alive.T
    indptr = np.concatenate([[0], np.cumsum(at.sum(axis=1))]).astype(np.int32)
    cols = np.argwhere(at)[:, 1].astype(np.int32)
    return sparse.BCSR(
        (jnp.asarray(kt[at]), jnp.asarray(cols), jnp.asarray(indptr)),
        shape=kt.shape,
        indices_sorted=True,
        unique_indices=True,
    )


def to_sparse(
    params: chex.ArrayTree,
    mask: chex.ArrayTree,
    *,
    where: Filter = None,
    format: str = "bcoo",
    n: int | None = None,
    m: int | None = None,
) -> chex.ArrayTree:
    """``params`` with the selected 2-D kernels as sparse matrices of their alive weights.

    Args:
      params: a params pytree (a Linen ``params`` dict, ...).
      mask: a ``bool`` pytree mirroring ``params``.
      where: which leaves become sparse (default :func:`dense_kernels`, floating leaves of
        rank 2); every selected leaf must be 2-D.
      format: ``"bcoo"``, ``"bcsr"`` or ``"nm"`` (layouts in the module docstring).
      n: ``n`` of the N:M pattern, required with ``format="nm"`` (groups along axis 0).
      m: ``m`` of the N:M pattern, required with ``format="nm"``.

    Returns:
      A pytree with ``params``' structure: selected kernels sparse, other leaves dense with
      pruned entries zeroed. :func:`to_dense` inverts it.

    Raises:
      ValueError: ``mask`` does not mirror ``params``; a selected leaf that is not 2-D; an
        unknown ``format``; ``n``/``m`` missing, or a mask that is not N:M (naming the path).
      TypeError: a traced ``mask`` or ``params`` (call ``to_sparse`` outside ``jit``).

    Examples:
        >>> params = {"Dense_0": {"kernel": jnp.array([[1.0, 2.0], [3.0, 4.0]]),
        ...                       "bias": jnp.zeros(2)}}
        >>> mask = {"Dense_0": {"kernel": jnp.array([[True, False], [False, True]]),
        ...                     "bias": jnp.ones(2, bool)}}
        >>> sp = js.export.to_sparse(params, mask)
        >>> sp["Dense_0"]["kernel"].nse, sp["Dense_0"]["kernel"].todense()
        (2, Array([[1., 0.],
               [0., 4.]], dtype=float32))

    References:
      Han et al., "Deep Compression", ICLR 2016; Frankle & Carbin, "The Lottery Ticket
      Hypothesis", ICLR 2019.
    """
    if format not in FORMATS:
        raise ValueError(f"to_sparse: format must be one of {FORMATS}, got {format!r}")
    if format == "nm" and (n is None or m is None):
        raise ValueError("to_sparse: format='nm' needs n= and m=")
    check_mask(mask, params)
    pred = resolve_filter(dense_kernels if where is None else where)

    def one(path, p, mk):
        name = path_str(path)
        if not pred(name, p):
            return zero_pruned(p, mk) if is_floating(p) else p
        if len(jnp.shape(p)) != 2:
            raise ValueError(
                f"to_sparse: leaf '{name}' has shape {jnp.shape(p)}; only 2-D kernels are "
                f"exported sparse (conv kernels stay dense: narrow where=)"
            )
        if isinstance(p, jax.core.Tracer) or isinstance(mk, jax.core.Tracer):
            raise TypeError(
                f"to_sparse: leaf '{name}' is traced; the stored-entry count is a shape, "
                f"so export outside jit"
            )
        if format == "nm":
            assert n is not None and m is not None  # checked on entry
            return nm_compress(p, mk, n, m, axis=0, name=name)
        kernel, alive = np.asarray(p), np.asarray(mk)
        return _bcoo(kernel, alive) if format == "bcoo" else _bcsr_transposed(kernel, alive)

    return jax.tree_util.tree_map_with_path(one, params, mask)


def _is_kernel(x: Any) -> bool:
    return isinstance(x, sparse.BCOO | sparse.BCSR | NMPacked)


def to_dense(sparse_params: chex.ArrayTree) -> chex.ArrayTree:
    """Inverse of :func:`to_sparse`: every sparse kernel back to a dense ``(in, out)`` array.

    Args:
      sparse_params: a pytree from :func:`to_sparse` (dense leaves pass through).

    Returns:
      The masked dense params: ``apply_mask(params, mask)`` of the exported pair.

    Examples:
        >>> params = {"w": jnp.array([[1.0, 2.0], [3.0, 4.0]])}
        >>> mask = {"w": jnp.array([[True, False], [True, True]])}
        >>> js.export.to_dense(js.export.to_sparse(params, mask, format="bcsr"))["w"]
        Array([[1., 0.],
               [3., 4.]], dtype=float32)

    References:
      Han et al., "Deep Compression", ICLR 2016.
    """

    def one(x):
        if isinstance(x, sparse.BCOO):
            return x.todense()
        if isinstance(x, sparse.BCSR):
            return x.todense().T
        if isinstance(x, NMPacked):
            return nm_decompress(x)
        return x

    return jax.tree.map(one, sparse_params, is_leaf=_is_kernel)


def matmul(x: jax.Array, kernel: Kernel) -> jax.Array:
    """``x @ kernel`` for a dense kernel or one exported by :func:`to_sparse`.

    Args:
      x: ``(..., in)`` activations.
      kernel: a dense ``(in, out)`` array, a ``BCOO`` ``(in, out)``, a ``BCSR`` of the
        transposed kernel ``(out, in)``, or an :class:`NMPacked` ``(in, out)``.

    Returns:
      ``(..., out)``, what the masked dense kernel gives.

    Raises:
      ValueError: ``x``'s last axis does not match the kernel's inputs.
      TypeError: ``kernel`` is none of the above.

    Examples:
        >>> k = js.export.to_sparse({"w": jnp.eye(2)}, {"w": jnp.eye(2, dtype=bool)},
        ...                         format="bcsr")["w"]
        >>> js.export.matmul(jnp.array([[1.0, 2.0]]), k)
        Array([[1., 2.]], dtype=float32)

    References:
      Han et al., "Deep Compression", ICLR 2016.
    """
    if isinstance(kernel, NMPacked):
        return nm_matmul(x, kernel)
    if not isinstance(kernel, sparse.BCOO | sparse.BCSR | jax.Array | np.ndarray):
        raise TypeError(f"matmul: unsupported kernel type {type(kernel).__name__}")
    bcsr = isinstance(kernel, sparse.BCSR)
    n_in = kernel.shape[1] if bcsr else kernel.shape[0]
    if jnp.shape(x)[-1:] != (n_in,):
        raise ValueError(f"matmul: x has shape {jnp.shape(x)}, the kernel takes {n_in} inputs")
    if not isinstance(kernel, sparse.BCOO | sparse.BCSR):
        return x @ kernel
    lead = jnp.shape(x)[:-1]
    x2 = jnp.reshape(x, (-1, n_in))
    y = (kernel @ x2.T).T if bcsr else x2 @ kernel
    return jnp.reshape(y, (*lead, y.shape[-1]))


def dense(x: jax.Array, kernel: Kernel, bias: jax.Array | None = None) -> jax.Array:
    """A Dense layer, ``matmul(x, kernel) + bias``, for dense or exported kernels.

    Args:
      x: ``(..., in)`` activations.
      kernel: anything :func:`matmul` takes.
      bias: ``(out,)`` or ``None``.

    Returns:
      ``(..., out)``.

    Raises:
      ValueError, TypeError: as :func:`matmul`.

    Examples:
        >>> k = js.export.to_sparse({"w": jnp.eye(2)}, {"w": jnp.eye(2, dtype=bool)})["w"]
        >>> js.export.dense(jnp.array([[1.0, 2.0]]), k, jnp.array([0.5, 0.5]))
        Array([[1.5, 2.5]], dtype=float32)

    References:
      Han et al., "Deep Compression", ICLR 2016.
    """
    y = matmul(x, kernel)
    return y if bias is None else y + bias


def _layer(tree: chex.ArrayTree, path: str) -> dict:
    node = tree
    for key in path.strip("/").split("/"):
        if not isinstance(node, dict) or key not in node:
            raise ValueError(f"mlp_apply: no layer at path '{path}' (missing '{key}')")
        node = node[key]
    if not isinstance(node, dict) or "kernel" not in node:
        raise ValueError(f"mlp_apply: '{path}' holds no 'kernel'")
    return node


def _dense_layer_names(tree: Mapping[str, Any]) -> list[str]:
    found = [(int(g.group(1)), k) for k in tree if (g := re.fullmatch(r"Dense_(\d+)", str(k)))]
    return [k for _, k in sorted(found)]


def mlp_apply(
    sparse_params: chex.ArrayTree,
    x: jax.Array,
    *,
    activation: Callable[[jax.Array], jax.Array] = jax.nn.relu,
    layers: Sequence[str] | None = None,
) -> jax.Array:
    """Runs a chain of Dense layers, ``activation`` between them (none after the last).

    Args:
      sparse_params: from :func:`to_sparse` (or plain dense params); a top-level
        ``{"params": ...}`` wrapper is looked through.
      x: ``(..., in)`` inputs (flatten images first, as the model does).
      activation: applied after every layer but the last.
      layers: ``/``-joined paths of the layer dicts (each with ``kernel`` and optionally
        ``bias``), in order; default: Linen's ``Dense_0``, ``Dense_1``, ... by number.

    Returns:
      The outputs of the masked dense model.

    Raises:
      ValueError: no ``Dense_<i>`` layers and no ``layers=``, or a path with no kernel.

    Examples:
        >>> params = {"Dense_0": {"kernel": jnp.eye(2), "bias": -jnp.ones(2)},
        ...           "Dense_1": {"kernel": jnp.ones((2, 1)), "bias": jnp.zeros(1)}}
        >>> sp = js.export.to_sparse(params, js.mask_like(params), format="bcsr")
        >>> js.export.mlp_apply(sp, jnp.array([[3.0, 0.0]]))
        Array([[2.]], dtype=float32)

    References:
      Frankle & Carbin, "The Lottery Ticket Hypothesis", ICLR 2019 (LeNet-300-100).
    """
    tree = sparse_params
    if isinstance(tree, dict) and set(tree) == {"params"}:
        tree = tree["params"]
    if layers is None:
        layers = _dense_layer_names(tree) if isinstance(tree, dict) else []
        if not layers:
            keys = list(tree) if isinstance(tree, dict) else type(tree).__name__
            raise ValueError(f"mlp_apply: no Dense_<i> layers in {keys}; pass layers=[...]")
    for i, path in enumerate(layers):
        wrapped = tree is not sparse_params and path.startswith("params/")
        layer = _layer(sparse_params if wrapped else tree, path)
        x = dense(x, layer["kernel"], layer.get("bias"))
        if i < len(layers) - 1:
            x = activation(x)
    return x
