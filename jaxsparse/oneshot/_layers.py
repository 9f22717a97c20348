"""One layer at a time: magnitude, Wanda and SparseGPT on a 2-D kernel ``(d_in, d_out)``.

Every function takes the kernel in Flax's layout, inputs along axis 0 (a conv kernel
``(kh, kw, cin, cout)`` is passed as ``(kh * kw * cin, cout)``), and returns a ``bool``
mask of the kernel's shape (``True`` = alive). Counts are exact and ties are broken by
position, as everywhere in jaxsparse: among equal scores the entry that comes first in the
kernel's row-major order is pruned first. N:M groups run along the input axis ``0``.
"""

from __future__ import annotations

from typing import Any, cast

import jax
import jax.numpy as jnp
import numpy as np

from jaxsparse.structured import nm as nm_pattern


def check_sparsity(sparsity: Any, who: str) -> float:
    """A concrete Python float in ``[0, 1)``, or a ``ValueError`` naming ``who``."""
    if isinstance(sparsity, jax.core.Tracer):
        raise TypeError(f"{who}: sparsity must be a concrete number (it sets counts), not traced")
    if np.ndim(sparsity) != 0:
        raise ValueError(f"{who}: sparsity must be a scalar, got shape {np.shape(sparsity)}")
    value = float(sparsity)
    if not (0.0 <= value < 1.0):
        raise ValueError(f"{who}: sparsity must be in [0, 1), got {value}")
    return value


def check_nm(nm: Any, d_in: int, who: str) -> tuple[int, int]:
    """``(n, m)`` with ``1 <= n <= m`` and ``m`` dividing ``d_in``, or a ``ValueError``."""
    try:
        n, m = (int(v) for v in nm)
    except (TypeError, ValueError):
        raise ValueError(f"{who}: nm must be a pair (n, m), got {nm!r}") from None
    if not 1 <= n <= m:
        raise ValueError(f"{who}: nm needs 1 <= n <= m, got {nm!r}")
    if d_in % m:
        raise ValueError(f"{who}: {d_in} inputs are not a multiple of m={m} (nm={n}:{m})")
    return n, m


def _check_2d(kernel: jax.typing.ArrayLike, who: str) -> None:
    if jnp.ndim(kernel) != 2:
        raise ValueError(
            f"{who}: expected a 2-D kernel (d_in, d_out), got shape {jnp.shape(kernel)}"
        )


@jax.jit
def _lowest_per_output(scores: jax.Array, k: int | jax.Array) -> jax.Array:
    """Mask pruning the ``k`` lowest scores of every column (output); ties: earlier first.
    ``k`` is data: one program serves every sparsity."""
    s = jnp.where(jnp.isnan(scores), -jnp.inf, scores)
    order = jnp.argsort(s, axis=0, stable=True)
    ranks = jnp.broadcast_to(jnp.arange(s.shape[0])[:, None], s.shape)
    ranks = jnp.put_along_axis(jnp.zeros_like(order), order, ranks, axis=0, inplace=False)
    return ranks >= k


def magnitude(
    kernel: jax.typing.ArrayLike,
    sparsity: float | jax.Array | None = None,
    *,
    nm: tuple[int, int] | None = None,
    compare: str = "layer",
) -> jax.Array:
    """The magnitude mask of one layer: the smallest ``|W|`` pruned.

    Args:
      kernel: a 2-D kernel ``(d_in, d_out)`` (any rank with ``compare="layer"``).
      sparsity: the fraction pruned, in ``[0, 1)``; unused with ``nm``.
      nm: ``(n, m)``: keep the ``n`` largest of every ``m`` consecutive inputs instead.
      compare: ``"layer"`` (exactly ``round(sparsity * size)`` over the whole kernel) or
        ``"output"`` (exactly ``round(sparsity * d_in)`` in every output, Wanda's
        comparison group).

    Returns:
      A ``bool`` mask of the kernel's shape.

    Examples:
        >>> w = jnp.array([[1.0, -4.0], [3.0, 0.5], [-2.0, 6.0], [0.1, 2.0]])
        >>> js.oneshot.magnitude(w, 0.5, compare="output")
        Array([[False,  True],
               [ True, False],
               [ True,  True],
               [False, False]], dtype=bool)

    References:
      Han et al., "Learning both Weights and Connections", NeurIPS 2015; Sun et al.,
      "A Simple and Effective Pruning Approach for Large Language Models" (Wanda), ICLR
      2024 (the per-output comparison group).
    """
    if compare not in ("layer", "output"):
        raise ValueError(f"magnitude: compare must be 'layer' or 'output', got {compare!r}")
    w = jnp.abs(jnp.asarray(kernel, jnp.float32))
    if nm is not None:
        _check_2d(kernel, "magnitude")
        n, m = check_nm(nm, w.shape[0], "magnitude")
        return cast(jax.Array, nm_pattern(w, n, m, axis=0))  # an array in, an array out
    sp = check_sparsity(sparsity, "magnitude")
    if compare == "layer":  # one column: the whole kernel in row-major order
        return _lowest_per_output(w.reshape(-1, 1), round(sp * w.size)).reshape(w.shape)
    _check_2d(kernel, "magnitude")
    return _lowest_per_output(w, round(sp * w.shape[0]))


def wanda(
    kernel: jax.typing.ArrayLike,
    sq_norms: jax.typing.ArrayLike,
    sparsity: float | jax.Array | None = None,
    *,
    nm: tuple[int, int] | None = None,
) -> jax.Array:
    """The Wanda mask of one layer: score ``|W_ij| * ||X_i||``, compared per output.

    Args:
      kernel: a 2-D kernel ``(d_in, d_out)``.
      sq_norms: ``(d_in,)``, the squared norm of every input feature over the
        calibration tokens (:attr:`LayerStats.sq_norms`).
      sparsity: the fraction of every output's weights pruned (exactly
        ``round(sparsity * d_in)`` each), in ``[0, 1)``; unused with ``nm``.
      nm: ``(n, m)``: keep the ``n`` best of every ``m`` consecutive inputs instead.

    Returns:
      A ``bool`` mask of the kernel's shape.

    Examples:
        >>> w = jnp.array([[1.0, -4.0], [3.0, 0.5], [-2.0, 6.0], [0.1, 2.0]])
        >>> js.oneshot.wanda(w, jnp.array([100.0, 1.0, 1.0, 1.0]), 0.5)
        Array([[ True,  True],
               [ True, False],
               [False,  True],
               [False, False]], dtype=bool)

    References:
      Sun et al., "A Simple and Effective Pruning Approach for Large Language Models",
      ICLR 2024.
    """
    _check_2d(kernel, "wanda")
    d_in = jnp.shape(kernel)[0]
    if jnp.shape(sq_norms) != (d_in,):
        raise ValueError(f"wanda: sq_norms has shape {jnp.shape(sq_norms)}, need ({d_in},)")
    norms = jnp.sqrt(jnp.asarray(sq_norms, jnp.float32))
    scores = jnp.abs(jnp.asarray(kernel, jnp.float32)) * norms[:, None]
    if nm is not None:
        n, m = check_nm(nm, d_in, "wanda")
        return cast(jax.Array, nm_pattern(scores, n, m, axis=0))  # an array in, an array out
    sp = check_sparsity(sparsity, "wanda")
    return _lowest_per_output(scores, round(sp * d_in))


def reconstruction_error(
    kernel: jax.typing.ArrayLike, new_kernel: jax.typing.ArrayLike, gram: jax.typing.ArrayLike
) -> jax.Array:
    """``‖XW − XŴ‖ / ‖XW‖`` of one layer on its calibration inputs, from ``G = XᵀX``.

    Args:
      kernel: the layer's 2-D kernel ``(d_in, d_out)`` before pruning.
      new_kernel: after pruning (masked, or SparseGPT's corrected kernel).
      gram: ``(d_in, d_in)``, ``XᵀX`` of the inputs.

    Returns:
      A float32 scalar (0 when ``XW`` is 0).

    Examples:
        >>> w = jnp.array([[1.0], [1.0]])
        >>> float(js.oneshot.reconstruction_error(w, w * jnp.array([[1.0], [0.0]]), jnp.eye(2)))
        0.7071067...

    References:
      Frantar & Alistarh, "SparseGPT", ICML 2023 (the layer-wise reconstruction problem).
    """
    w = jnp.asarray(kernel, jnp.float32)
    delta = w - jnp.asarray(new_kernel, jnp.float32)
    g = jnp.asarray(gram, jnp.float32)
    num = jnp.sum(delta * (g @ delta))
    den = jnp.sum(w * (g @ w))
    return jnp.where(den > 0, jnp.sqrt(jnp.maximum(num, 0.0) / jnp.where(den > 0, den, 1.0)), 0.0)
