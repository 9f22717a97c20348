"""The random-pruning study on real MNIST digits (Liu et al., ICLR 2022).

Random masks at several sparsities, with the per-layer densities of five rules (uniform,
uniform+, ER, ERK, and SNIP-ratio: SNIP's per-layer densities with random positions),
trained from scratch on an MLP (two depths) and a small conv net at several widths, and
compared with the dense network of the same width and with a narrower dense network with
as many weights. For every network, all arms and seeds train together in one compiled
program (``jax.vmap``), masks and initial weights as data.

Run::

    jaxsparse random-pruning            # default study, a few minutes on 2 CPU cores
    jaxsparse random-pruning --quick    # smoke test
    jaxsparse random-pruning --conv-widths "" --mlp-depths 2 --sparsities 0.9
    jaxsparse random-pruning --resume   # continue after an interruption (per network)
"""

from experiments.harness import Study
from experiments.random_pruning.config import RandomPruningConfig
from experiments.random_pruning.run import run_study

STUDY = Study(RandomPruningConfig, run_study, __doc__)
