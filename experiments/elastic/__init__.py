"""The elastic-ticket study (Chen et al., "The Elastic Lottery Ticket Hypothesis",
NeurIPS 2021) on real MNIST digits, average-pooled to 14x14.

A ResNet-(6N+2) family (three stages of N basic blocks; see
:mod:`experiments.elastic.model`). IMP with late rewinding finds tickets at the source
depth: train, prune a share of the remaining block weights (one global threshold; stem
and head dense), rewind the survivors to their values at step k, repeat. Each round's
ticket (mask and step-k weights) is stretched or squeezed to the target depths with
:func:`jaxsparse.transfer.elastic` under every strategy, and trained there beside

* IMP run directly at the target depth (its round-r ticket costs r + 1 trainings there);
* the dense network at the target depth;
* the paper's control: the interleaved ticket with every copied block's mask shuffled;
* random masks at the interleaved ticket's layer densities, on the same weights.

Fair by construction: every arm trains the same number of updates with the same
schedule and data order (paired by seed), and every pruned arm, controls included,
starts from step-k weights with a fresh optimizer at step 0. Results are paired
differences against IMP and dense at each depth, with 95% intervals.

All arms and seeds at one depth share one compiled program (masks and weights are data),
so each depth compiles once.

Run::

    jaxsparse elastic            # default study (about 15 min on 2 shared cores)
    jaxsparse elastic --quick    # smoke test
    jaxsparse elastic --resume   # continue from the saved stages
"""

from experiments.elastic.config import ElasticConfig
from experiments.elastic.run import run_study
from experiments.harness import Study

STUDY = Study(ElasticConfig, run_study, __doc__)
