"""One-shot pruning of a pre-trained Flax model from calibration data.

A pre-trained network is pruned once, layer by layer, from a few hundred calibration
sequences and no retraining (Frantar & Alistarh 2023; Sun et al. 2024)::

    out = js.oneshot.prune(lambda p, x: model.apply({"params": p}, x), params, batches,
                           method="sparsegpt", sparsity=0.5)      # or nm=(2, 4)
    tx = js.masked(optax.adam(1e-4))                              # fine-tune sparse
    opt_state = js.set_mask(tx.init(out.params), out.mask)

* :func:`prune`: the one call (magnitude, Wanda, SparseGPT; unstructured, N:M or
  per-layer sparsities; sequential by default); :class:`OneShotResult`.
* :func:`capture`, :class:`LayerStats`: each layer's ``XᵀX`` and per-feature squared
  norms, through ``nn.intercept_methods`` (Linen) or :func:`nnx_forward` (NNX).
* :func:`magnitude`, :func:`wanda`, :func:`sparsegpt`, :func:`reconstruction_error`:
  one 2-D kernel ``(d_in, d_out)`` at a time, pure and jittable.
"""

from jaxsparse.oneshot._calibrate import capture, layer_kernels
from jaxsparse.oneshot._capture import LayerStats, nnx_forward
from jaxsparse.oneshot._layers import magnitude, reconstruction_error, wanda
from jaxsparse.oneshot._prune import OneShotResult, prune
from jaxsparse.oneshot._sparsegpt import sparsegpt

__all__ = [
    "LayerStats",
    "OneShotResult",
    "capture",
    "layer_kernels",
    "magnitude",
    "nnx_forward",
    "prune",
    "reconstruction_error",
    "sparsegpt",
    "wanda",
]
