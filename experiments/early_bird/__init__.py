"""The early-bird study on real digits (You et al., ICLR 2020).

A small VGG-style conv net with BatchNorm is trained on MNIST with the network-slimming
L1 penalty on the BN scales. After every check (half an epoch by default) the channel
masks keeping the largest |γ| at 30, 50 and 70% global pruning go through the
early-bird detector (:mod:`jaxsparse.early_bird`, window 5, eps 0.1). The ticket drawn
when a ratio's masks stop changing is physically shrunk (:func:`jaxsparse.structured.shrink`,
a model whose widths are constructor arguments) and retrained to the end of the epoch
budget, interleaved with a dense run of the same budget, so the measured wall times
compare. Controls: the ticket drawn after full training and random channels at the
early-bird widths, retrained alike.

Outputs: the epoch x epoch mask-distance heat maps (You et al., Fig. 2), the epoch each
ratio's early bird is found, and accuracy (mean ± std over seeds), parameters, FLOPs per
example and measured wall time of each ticket against dense, in
``runs/early-bird-<hash8>/``.

Seeds run one after another (the shrunk widths differ per seed, so they cannot share
one vmapped program); the full-width programs compile once for all seeds.

Run::

    jaxsparse early-bird              # default study
    jaxsparse early-bird --quick      # smoke test
    jaxsparse early-bird --resume     # skip the seeds already done
"""

from experiments.early_bird.config import EarlyBirdConfig
from experiments.early_bird.run import run_study
from experiments.harness import Study

STUDY = Study(EarlyBirdConfig, run_study, __doc__)
