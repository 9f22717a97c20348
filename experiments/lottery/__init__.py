"""The lottery-ticket study on real digits (Frankle & Carbin, ICLR 2019).

Iterative magnitude pruning of LeNet-300-100 (or a small Conv-2-like net): every round
trains the current winning ticket and its two controls, random re-initialisation (same
mask, fresh initial weights) and random re-pruning (same initial weights, each layer's
mask shuffled at the same density), then prunes the ticket (hidden layers 20%, output
layer 10% of the remaining weights) and rewinds the survivors to their initial values
(or to step k with ``--rewind-step k``). The three arms and all seeds are trained
together in one compiled program (``jaxsparse.lottery.run`` vmapped over seeds), one
round per call so progress shows; the program compiles once.

Per round and arm it reports the share of weights remaining, the test accuracy at the
early-stopping iteration (minimum validation loss), that iteration and the final test
accuracy, as mean ± std over seeds, and writes ``results.json``, ``results.csv``, a
table, a plot and the best ticket to ``runs/lottery-<hash8>/``.

Run::

    jaxsparse lottery                 # default study, a few minutes on 2 CPU cores
    jaxsparse lottery --quick         # smoke test, well under a minute
    python -m experiments.lottery --data mnist1d --model conv --rewind-step 100
    jaxsparse lottery --resume        # continue an interrupted run from its checkpoints
    jaxsparse lottery --mesh          # data-parallel over all local devices
    jaxsparse lottery --mesh --coordinator 127.0.0.1:1234 --num-processes 2 --process-id I
                                      # one of 2 processes (I = 0, 1); process 0 writes
"""

from experiments.harness import Study
from experiments.lottery.config import LotteryConfig
from experiments.lottery.run import run_study

STUDY = Study(LotteryConfig, run_study, __doc__)
