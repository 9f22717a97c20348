"""The transfer study: lottery tickets of a pre-trained model carried to other tasks
(Chen et al., NeurIPS 2020, BERT tickets; Chen et al., CVPR 2021, CV tickets).

LeNet-300-100 is pre-trained on the MNIST digits 0-4 (the source task). IMP then finds
tickets on the source: train from the pre-trained weights, prune 20% of the remaining
backbone weights (both hidden layers, one global threshold; the task head stays dense),
rewind the survivors to the *pre-trained* weights, repeat. Each round's mask is carried
with the pre-trained weights and a new head (``jaxsparse.transfer.apply_ticket``) to the
downstream tasks, MNIST digits 5-9 and scikit-learn's UCI digits upsampled to 28x28, and
compared, per task and round, with

* (a) the dense pre-trained model fine-tuned (round 0);
* (b) the transferred source ticket;
* (c) IMP run directly on the downstream task (rewinding to the pre-trained weights);
* (d) one-shot global magnitude pruning of the pre-trained weights, same sparsity;
* (e) a random mask at (b)'s layer densities, on the pre-trained weights;
* (f) (b)'s mask from a random initialisation.

All five trained arms of a round and all seeds are one compiled program a task.

Run::

    jaxsparse transfer            # default study (~5 min CPU on 2 cores)
    jaxsparse transfer --quick    # smoke test
    jaxsparse transfer --resume   # continue from the saved stages
"""

from experiments.harness import Study
from experiments.transfer.config import TransferConfig
from experiments.transfer.run import run_study

STUDY = Study(TransferConfig, run_study, __doc__)
