"""The transfer study: lottery tickets of a pre-trained model carried to other tasks
(Chen et al., NeurIPS 2020, BERT tickets; Chen et al., CVPR 2021, CV tickets).

A small 1-D CNN is pre-trained at length on a large MNIST-1D source set (the standard
variant). IMP then finds tickets on the source: train from the pre-trained weights, prune
20% of the remaining backbone weights (convolution and hidden kernels, one global
threshold; the task head stays dense), rewind the survivors to the *pre-trained*
weights, repeat. Chosen rounds' masks are carried with the pre-trained weights and a new
head (``jaxsparse.transfer.apply_ticket``) to MNIST-1D variants that differ from the
source ("reversed" templates, "noisy" signals), each with a small training set and a
large test set, and compared with

* (a) the dense pre-trained model fine-tuned, and the dense net trained from scratch
  (the premise check: pre-training must help the target for the test to mean anything);
* (b) the transferred source ticket;
* (c) IMP run on the target itself (rewinding to the same pre-trained start);
* (d) one-shot global magnitude pruning of the pre-trained weights, same sparsity;
* (e) a random mask at (b)'s layer densities, on the pre-trained weights;
* (f) (b)'s mask from a random initialisation.

Every arm trains the same number of updates from the same start (the pre-trained
backbone with one shared new head, or the scratch init for the two random-init arms),
on the same data order a seed, at the learning rate of a small grid that is best on the
target's validation set; all arms, learning rates and seeds of a target are one compiled
program. Differences to (a) are paired by seed with 95% intervals
(``experiments.stats.paired``).

Run::

    jaxsparse transfer            # default study (~15 min wall, ~8 CPU-min, shared 2 cores)
    jaxsparse transfer --quick    # smoke test
    jaxsparse transfer --resume   # continue from the saved stages
"""

from experiments.harness import Study
from experiments.transfer.config import TransferConfig
from experiments.transfer.run import run_study

STUDY = Study(TransferConfig, run_study, __doc__)
