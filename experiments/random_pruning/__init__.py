"""The random-pruning study on MNIST-1D (Liu et al., ICLR 2022), made fair.

Random masks at 90% and 97% sparsity with the per-layer densities of uniform, ERK and
SNIP-ratio (SNIP's per-layer densities, random positions), each from the dense init or
from the init scaled to each layer's density (Evci et al. 2022), trained from scratch on
MLPs of several widths against the dense MLP of the same width and a narrower dense MLP
with as many weights. Every arm gets the same steps and its own learning rate, chosen on
validation from a small grid; the test numbers are paired differences over seeds with
95% intervals. Per width, all arms, learning rates and seeds train in one compiled
program (``jax.vmap``), with initial weights, masks and learning rates as data.

Run::

    jaxsparse random-pruning            # default study, ~15 minutes on 2 CPU cores
    jaxsparse random-pruning --quick    # smoke test
    jaxsparse random-pruning --widths 0.5,1,2,4,8 --depth 3   # wider, deeper (longer)
    jaxsparse random-pruning --resume   # continue after an interruption (per width)
"""

from experiments.harness import Study
from experiments.random_pruning.config import RandomPruningConfig
from experiments.random_pruning.run import run_study

STUDY = Study(RandomPruningConfig, run_study, __doc__)
