"""jaxsparse: functional sparse training and lottery tickets for JAX.

Masks are pytrees that mirror the params (one ``bool`` array per leaf, ``True`` = alive);
pruning, rewinding and scoring are pure functions over pytrees and train states; the
optax transform :func:`masked` keeps pruned weights frozen at zero.

Where things live (imports run downward only):

* ``filters``: pytree paths and ``where=`` filters; ``masks``: mask pytrees, distances,
  bit-packing.
* ``scores`` (with ``saliency``), ``distributions``, ``pruning``, ``optim``,
  ``schedules``, ``ste``: the parts.
* ``state``, ``lottery``, ``controls``, ``dst``, ``checkpoint``, ``parallel``: what users do.
* ``oneshot``: one-shot pruning of a pre-trained Flax model from calibration batches
  (magnitude, Wanda, SparseGPT; unstructured and N:M).
"""

from jaxsparse import (
    checkpoint,
    controls,
    distributions,
    dst,
    early_bird,
    export,
    filters,
    lottery,
    oneshot,
    parallel,
    schedules,
    scores,
    structured,
    training,
    transfer,
)
from jaxsparse._version import __version__
from jaxsparse.controls import random_reinit, reprune
from jaxsparse.filters import all_leaves, kernels
from jaxsparse.lottery import imp_round
from jaxsparse.masks import (
    apply_mask,
    check_mask,
    density,
    hamming,
    leaf_sparsity,
    mask_like,
    overlap,
    pack,
    report,
    sparsity,
    unpack,
)
from jaxsparse.optim import MaskedState, get_mask, masked, set_mask
from jaxsparse.pruning import prune, shuffle_mask
from jaxsparse.slimming import slimming
from jaxsparse.state import SparseTrainState
from jaxsparse.ste import straight_through
from jaxsparse.training import make_train_fn

__all__ = [
    "MaskedState",
    "SparseTrainState",
    "__version__",
    "all_leaves",
    "apply_mask",
    "check_mask",
    "checkpoint",
    "controls",
    "density",
    "distributions",
    "dst",
    "early_bird",
    "export",
    "filters",
    "get_mask",
    "hamming",
    "imp_round",
    "kernels",
    "leaf_sparsity",
    "lottery",
    "make_train_fn",
    "mask_like",
    "masked",
    "oneshot",
    "overlap",
    "pack",
    "parallel",
    "prune",
    "random_reinit",
    "report",
    "reprune",
    "schedules",
    "scores",
    "set_mask",
    "shuffle_mask",
    "slimming",
    "sparsity",
    "straight_through",
    "structured",
    "training",
    "transfer",
    "unpack",
]
