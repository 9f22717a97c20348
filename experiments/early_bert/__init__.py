"""The EarlyBERT study on real digits (Chen et al., ACL 2021).

A small transformer encoder over MNIST (7x7 patches as tokens) carries slimming
coefficients, initialised to 1, on every attention head's output and every FFN unit; the
pipeline trains with an L1 penalty on them (``jaxsparse.slimming``) and after every check
(half an epoch by default) pushes the structured mask (1 of 4 heads pruned in every layer,
40% of FFN units globally, by |coefficient|) into the early-bird detector. When the mask
stops changing the ticket is drawn: params and Adam's moments are physically shrunk
(:func:`jaxsparse.structured.shrink`) and the smaller encoder trains on, on the same
schedule, to the end of the epoch budget. A dense encoder trains the same budget,
alternating chunk by chunk with the pipeline, so the measured wall times compare.

Controls, paired by seed: the ticket drawn from the search run after full training and a
small dense encoder at the ticket's widths from fresh weights, each trained for exactly
the pipeline's steps after the draw on the same batches, and dense trained for as many
steps as fit in the pipeline's measured time (compile left out). Reports every arm's
test and training accuracy with its paired difference from dense (95% interval, verdict
at a 0.5-point margin) and the measured training time with and without compile, for
EarlyBERT's claim (comparable accuracy, 35–45% less training time), in
``runs/early-bert-<hash8>/``. Seeds run one after another: the shrunk widths differ per
seed; the full-width programs compile once for all.

Run::

    jaxsparse early-bert              # default study
    jaxsparse early-bert --quick      # smoke test
    jaxsparse early-bert --resume     # skip the seeds already done
"""

from experiments.early_bert.config import EarlyBertConfig
from experiments.early_bert.run import run_study
from experiments.harness import Study

STUDY = Study(EarlyBertConfig, run_study, __doc__)
