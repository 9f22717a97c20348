"""One layer at a time: magnitude, Wanda and SparseGPT on a 2-D kernel ``(d_in, d_out)``.

Every function takes the kernel in Flax's layout, inputs along axis 0 (a conv kernel
``(kh, kw, cin, cout)`` is passed as ``(kh * kw * cin, cout)``), and returns a ``bool``
mask of the kernel's shape (``True`` = alive). Counts are exact and ties are broken by
position, as everywhere in jaxsparse: among equal scores the entry that comes first in the
kernel's row-major order is pruned first. N:M groups run along the input axis ``0``.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from jaxsparse._select import _select
from jaxsparse.pruning import prune
from jaxsparse.structured import nm as nm_pattern


def check_sparsity(sparsity, who: str) -> float:
    """A concrete Python float in ``[0, 1)``, or a ``ValueError`` naming ``who``."""
    if isinstance(sparsity, jax.core.Tracer):
        raise TypeError(f"{who}: sparsity must be a concrete number (it sets counts), not traced")
    if np.ndim(sparsity) != 0:
        raise ValueError(f"{who}: sparsity must be a scalar, got shape {np.shape(sparsity)}")
    value = float(sparsity)
    if not (0.0 <= value < 1.0):
        raise ValueError(f"{who}: sparsity must be in [0, 1), got {value}")
    return value


def check_nm(nm, d_in: int, who: str) -> tuple[int, int]:
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


def _check_2d(kernel, who: str) -> None:
    if jnp.ndim(kernel) != 2:
        raise ValueError(
            f"{who}: expected a 2-D kernel (d_in, d_out), got shape {jnp.shape(kernel)}"
        )


def _lowest_per_output(scores: jax.Array, k: int) -> jax.Array:
    """Mask pruning the ``k`` lowest scores of every column (output); ties: earlier first."""
    s = jnp.where(jnp.isnan(scores), -jnp.inf, scores)
    order = jnp.argsort(s, axis=0, stable=True)
    ranks = jnp.broadcast_to(jnp.arange(s.shape[0])[:, None], s.shape)
    ranks = jnp.put_along_axis(jnp.zeros_like(order), order, ranks, axis=0, inplace=False)
    return ranks >= k


def magnitude(kernel, sparsity=None, *, nm=None, compare: str = "layer") -> jax.Array:
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

    Example:
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
        return nm_pattern(w, n, m, axis=0)
    sp = check_sparsity(sparsity, "magnitude")
    if compare == "layer":
        return prune(w, jnp.ones(w.shape, bool), sp, where=lambda p, x: True)
    _check_2d(kernel, "magnitude")
    return _lowest_per_output(w, round(sp * w.shape[0]))


def wanda(kernel, sq_norms, sparsity=None, *, nm=None) -> jax.Array:
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

    Example:
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
        return nm_pattern(scores, n, m, axis=0)
    sp = check_sparsity(sparsity, "wanda")
    return _lowest_per_output(scores, round(sp * d_in))


def _block_counts(sparsity: float, d_in: int, d_out: int, block: int, n_blocks: int):
    """Weights pruned in each block of columns so that the running total is always
    ``round(sparsity * weights so far)``: the layer loses exactly ``round(s * size)``.
    Padding columns (past ``d_in``) count as pruned."""
    ends = np.minimum(np.arange(1, n_blocks + 1) * block, d_in)
    total = np.array([round(sparsity * d_out * int(e)) for e in ends])
    real = np.diff(np.concatenate([[0], total]))
    pad = (np.arange(1, n_blocks + 1) * block - ends) * d_out
    return (real + pad).astype(np.int32)


@functools.partial(jax.jit, static_argnames=("block", "n", "m"))
def _obs(w, gram, count, k_blocks, damp, *, block: int, n: int, m: int):
    """SparseGPT's sweep on ``w`` ``(d_out, d_in)`` (rows = outputs, as in the paper)."""
    d_out, d_in = w.shape
    n_blocks = k_blocks.shape[0]
    size = n_blocks * block
    h = 2.0 * gram.astype(jnp.float32) / jnp.maximum(count, 1.0)
    diag = jnp.diagonal(h)
    dead = diag == 0
    h = h + jnp.diag(jnp.where(dead, 1.0, 0.0))
    w = jnp.where(dead[None, :], 0.0, w.astype(jnp.float32))
    h = h + damp * jnp.mean(jnp.diagonal(h)) * jnp.eye(d_in, dtype=jnp.float32)
    pad = size - d_in
    h = jnp.pad(h, ((0, pad), (0, pad))) + jnp.diag(jnp.arange(size) >= d_in).astype(h.dtype)
    w = jnp.pad(w, ((0, 0), (0, pad)))
    # H = V Vᵀ with V upper triangular (a Cholesky of H with rows and columns reversed);
    # then H⁻¹ = V⁻ᵀ V⁻¹, so U = V⁻¹ is the upper Cholesky factor of H⁻¹, with no
    # explicit inverse of H (half the work of inverting H and factoring the inverse)
    v = jnp.linalg.cholesky(h[::-1, ::-1])[::-1, ::-1]
    u = jax.scipy.linalg.solve_triangular(v, jnp.eye(size, dtype=jnp.float32), lower=False)
    u = jnp.triu(u)
    real_of = jnp.arange(size) < d_in
    group = block if n == 0 else m

    def one_block(w, b):
        start = b * block
        w1 = jax.lax.dynamic_slice_in_dim(w, start, block, axis=1)
        u1 = jax.lax.dynamic_slice(u, (start, start), (block, block))
        d = jnp.diagonal(u1)
        if n == 0:  # unstructured: one count over the block, kernel layout (block, d_out)
            score = jnp.where(
                jax.lax.dynamic_slice_in_dim(real_of, start, block)[:, None],
                (w1**2 / d[None, :] ** 2).T,
                -jnp.inf,
            )
            keep0 = ~_select(score, jnp.ones(score.shape, bool), k_blocks[b]).T
        else:
            keep0 = jnp.ones((d_out, block), bool)

        def one_group(g, carry):
            w1, q1, e1, keep = carry
            if n:  # N:M: the group's mask from the weights as they are now
                s = jax.lax.dynamic_slice_in_dim(w1, g * m, m, axis=1) ** 2
                s = s / jax.lax.dynamic_slice_in_dim(d, g * m, m)[None, :] ** 2
                keep = jax.lax.dynamic_update_slice_in_dim(keep, nm_pattern(s, n, m), g * m, 1)

            def one_column(j, c):
                w1, q1, e1 = c
                i = g * group + j
                wi = jax.lax.dynamic_index_in_dim(w1, i, axis=1, keepdims=False)
                ki = jax.lax.dynamic_index_in_dim(keep, i, axis=1, keepdims=False)
                q = jnp.where(ki, wi, 0.0)
                err = (wi - q) / d[i]
                # u1 is upper triangular: columns before i are not touched
                w1 = w1 - err[:, None] * jax.lax.dynamic_index_in_dim(u1, i, keepdims=True)
                q1 = jax.lax.dynamic_update_index_in_dim(q1, q, i, axis=1)
                e1 = jax.lax.dynamic_update_index_in_dim(e1, err, i, axis=1)
                return w1, q1, e1

            w1, q1, e1 = jax.lax.fori_loop(0, group, one_column, (w1, q1, e1))
            return w1, q1, e1, keep

        zeros = jnp.zeros_like(w1)
        _, q1, e1, keep = jax.lax.fori_loop(0, block // group, one_group, (w1, zeros, zeros, keep0))
        # the lazy update of every later column at once (earlier ones: u is triangular)
        w = w - e1 @ jax.lax.dynamic_slice_in_dim(u, start, block, axis=0)
        w = jax.lax.dynamic_update_slice_in_dim(w, q1, start, axis=1)
        return w, keep

    w, keeps = jax.lax.scan(one_block, w, jnp.arange(n_blocks))
    keep = jnp.moveaxis(keeps, 0, 1).reshape(d_out, size)
    return w[:, :d_in], keep[:, :d_in]


def sparsegpt(
    kernel,
    gram,
    sparsity=None,
    *,
    nm=None,
    count=1.0,
    blocksize: int = 128,
    damp: float = 0.01,
) -> tuple[jax.Array, jax.Array]:
    """SparseGPT on one layer: the mask, and the surviving weights corrected (OBS).

    With ``H = 2 XᵀX / n`` (dead inputs, ``H_ii = 0``, get ``H_ii = 1`` and their weights
    set to 0; ``damp * mean(diag H)`` added to the diagonal) and ``U`` the upper Cholesky
    factor of ``H⁻¹``, the inputs are walked in blocks of ``blocksize``. In each block the
    mask is chosen by ``w² / U_jj²`` (unstructured: exactly the block's share of the
    layer's count, lowest first, ties by position; N:M: per output in every group of
    ``m``, from the weights as they are when the group starts); then column by column the
    pruned weight's error ``(w_j - ŵ_j) / U_jj`` is spread over the block's later columns
    along ``U_j``, and after the block over all later columns at once.

    Args:
      kernel: a 2-D kernel ``(d_in, d_out)``, float32.
      gram: ``(d_in, d_in)``, ``XᵀX`` of the layer's calibration inputs.
      sparsity: fraction of the layer's weights pruned, in ``[0, 1)`` (exactly
        ``round(sparsity * d_in * d_out)``); unused with ``nm``.
      nm: ``(n, m)`` to keep ``n`` of every ``m`` consecutive inputs of each output.
      count: ``n``, the number of calibration tokens in ``gram`` (only scales ``H``).
      blocksize: columns a block (128 in the paper); with ``nm`` a multiple of ``m``.
      damp: the damping, relative to ``mean(diag H)``.

    Returns:
      ``(new_kernel, mask)``: the corrected kernel, exactly zero where ``mask`` is
      ``False``, and the ``bool`` mask. Runs under ``jit`` (sparsity and ``nm`` static).

    Example:
        >>> x = jax.random.normal(jax.random.key(0), (64, 8))
        >>> w = jax.random.normal(jax.random.key(1), (8, 4))
        >>> new, mask = js.oneshot.sparsegpt(w, x.T @ x, 0.5, blocksize=4)
        >>> int(mask.sum()), bool(jnp.all(jnp.where(mask, True, new == 0)))
        (16, True)

    References:
      Frantar & Alistarh, "SparseGPT: Massive Language Models Can Be Accurately Pruned in
      One-Shot", ICML 2023; Hassibi & Stork, "Optimal Brain Surgeon", NeurIPS 1992.
    """
    _check_2d(kernel, "sparsegpt")
    d_in, d_out = jnp.shape(kernel)
    if jnp.shape(gram) != (d_in, d_in):
        raise ValueError(f"sparsegpt: gram has shape {jnp.shape(gram)}, need ({d_in}, {d_in})")
    if not isinstance(blocksize, int) or blocksize < 1:
        raise ValueError(f"sparsegpt: blocksize must be a positive int, got {blocksize!r}")
    block = min(blocksize, d_in)
    if nm is not None:
        n, m = check_nm(nm, d_in, "sparsegpt")
        if block % m:
            raise ValueError(f"sparsegpt: blocksize {block} is not a multiple of m={m}")
        sp = 0.0
    else:
        n, m = 0, 1
        sp = check_sparsity(sparsity, "sparsegpt")
    n_blocks = -(-d_in // block)
    k_blocks = jnp.asarray(
        _block_counts(sp, d_in, d_out, block, n_blocks) if n == 0 else np.zeros(n_blocks, int),
        jnp.int32,
    )
    w, keep = _obs(
        jnp.asarray(kernel).T,
        gram,
        jnp.float32(count),
        k_blocks,
        jnp.float32(damp),
        block=block,
        n=n,
        m=m,
    )
    return w.T.astype(jnp.result_type(kernel)), keep.T


def reconstruction_error(kernel, new_kernel, gram) -> jax.Array:
    """``‖XW − XŴ‖ / ‖XW‖`` of one layer on its calibration inputs, from ``G = XᵀX``.

    Args:
      kernel: the layer's 2-D kernel ``(d_in, d_out)`` before pruning.
      new_kernel: after pruning (masked, or SparseGPT's corrected kernel).
      gram: ``(d_in, d_in)``, ``XᵀX`` of the inputs.

    Returns:
      A float32 scalar (0 when ``XW`` is 0).

    Example:
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
