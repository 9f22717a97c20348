"""The elastic-ticket study (Chen et al., "The Elastic Lottery Ticket Hypothesis",
NeurIPS 2021) on real MNIST digits, average-pooled to 14x14.

A ResNet-(6N+2) family (three stages of N basic blocks, 8/16/32 channels; see
:mod:`experiments.elastic.model`). IMP with late rewinding finds tickets at the source
depth (N = 3): train, prune 40% of the remaining block weights (one global threshold;
stem and head dense), rewind the survivors to their values at step k, repeat. Each
round's ticket (mask and rewind weights) is stretched (N = 5, 7) and squeezed (N = 2)
with :func:`jaxsparse.transfer.elastic` under every strategy, and trained at the target
depth beside

* IMP run directly at the target depth (its tickets cost r + 1 trainings there);
* the paper's control: the interleaved ticket with every copied block's mask shuffled;
* random pruning: a fresh initialisation under a random mask at the interleaved
  ticket's layer densities.

All arms of a round at one depth and all seeds are one compiled program (masks and
weights are data), so each depth compiles once.

Run::

    jaxsparse elastic            # default study (~5 min CPU on 2 cores)
    jaxsparse elastic --quick    # smoke test
    jaxsparse elastic --resume   # continue from the saved stages
"""

from experiments.elastic.config import ElasticConfig
from experiments.elastic.run import run_study
from experiments.harness import Study

STUDY = Study(ElasticConfig, run_study, __doc__)
