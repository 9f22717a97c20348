"""The early-bird study on real digits (You et al., ICLR 2020).

A small VGG-style conv net with BatchNorm is trained on MNIST with the network-slimming
L1 penalty on the BN scales. After every check (half an epoch by default) the channel
masks keeping the largest |γ| at 30, 50 and 70% global pruning go through the
early-bird detector (:mod:`jaxsparse.early_bird`, window 5, eps 0.1). The ticket drawn
when a ratio's masks stop changing is physically shrunk (:func:`jaxsparse.structured.shrink`,
a model whose widths are constructor arguments) and retrained to the end of the epoch
budget, interleaved with a dense run of the same budget, so the measured wall times
compare. Controls, each for exactly the early-bird ticket's retraining steps on the same
batches: the ticket drawn after full training, random channels at the early-bird
widths, and a small dense net at those widths from fresh weights; and dense trained for
as many steps as fit in the pipeline's measured time (compile left out).

Outputs: the epoch x epoch mask-distance heat maps (You et al., Fig. 2), the epoch each
ratio's early bird is found, every arm's test and training accuracy with its paired
difference from dense (95% interval, verdict at a 0.5-point margin), parameters, FLOPs
per example and measured wall time with and without compile, in
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
