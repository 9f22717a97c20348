"""SparseGPT on one layer: mask selection and the OBS update, block by block."""

from __future__ import annotations

import functools
from typing import cast

import jax
import jax.numpy as jnp
import numpy as np

from jaxsparse._select import _select
from jaxsparse.oneshot._layers import _check_2d, check_nm, check_sparsity
from jaxsparse.structured import nm as nm_pattern


def _block_counts(sparsity: float, d_in: int, d_out: int, block: int, n_blocks: int) -> np.ndarray:
    """Weights pruned in each block of columns so that the running total is always
    ``round(sparsity * weights so far)``: the layer loses exactly ``round(s * size)``.
    Padding columns (past ``d_in``) count as pruned."""
    ends = np.minimum(np.arange(1, n_blocks + 1) * block, d_in)
    total = np.array([round(sparsity * d_out * int(e)) for e in ends])
    real = np.diff(np.concatenate([[0], total]))
    pad = (np.arange(1, n_blocks + 1) * block - ends) * d_out
    return (real + pad).astype(np.int32)


@functools.partial(jax.jit, static_argnames=("block", "n", "m"))
def _obs(
    w: jax.Array,
    gram: jax.Array,
    count: jax.Array,
    k_blocks: jax.Array,
    damp: jax.Array,
    *,
    block: int,
    n: int,
    m: int,
) -> tuple[jax.Array, jax.Array]:
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
                s_keep = cast(jax.Array, nm_pattern(s, n, m))  # an array in, an array out
                keep = jax.lax.dynamic_update_slice_in_dim(keep, s_keep, g * m, 1)

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
    kernel: jax.typing.ArrayLike,
    gram: jax.typing.ArrayLike,
    sparsity: float | jax.Array | None = None,
    *,
    nm: tuple[int, int] | None = None,
    count: float | jax.Array = 1.0,
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

    Examples:
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
