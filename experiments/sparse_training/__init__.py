"""The sparse-training study on real MNIST digits: the baselines of a sparse-training
library at one sparsity (90% by default) and an equal step budget.

Dense, static random (ERK), SNIP, GraSP, SynFlow, SET, RigL, gradual magnitude pruning
(Zhu & Gupta), straight-through magnitude (STE) and the IMP ticket
(:func:`jaxsparse.lottery.run`) each train LeNet-300-100 for the same number of steps on
the same data order; every method reports its test accuracy (mean ± std over seeds), its
training time and what finding its mask cost (training steps and seconds). Seeds are
vmapped; the fixed-mask methods share one compiled training program.

Run::

    jaxsparse sparse-training            # default study, a few minutes on 2 CPU cores
    jaxsparse sparse-training --quick    # smoke test
    jaxsparse sparse-training --methods dense,erk,rigl --sparsity 0.95
    jaxsparse sparse-training --resume   # continue after an interruption (per method)
"""

from experiments.harness import Study
from experiments.sparse_training.config import SparseTrainingConfig
from experiments.sparse_training.run import run_study

STUDY = Study(SparseTrainingConfig, run_study, __doc__)
