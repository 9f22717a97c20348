"""One-shot pruning of a pre-trained byte-level transformer (SparseGPT, Wanda, magnitude).

No pre-trained weights can be downloaded here, so the study pre-trains its own: a small
decoder-only transformer over the bytes of optax's Python sources (the installed, pinned
version; file list and hash recorded), with a held-out tenth of the files for
perplexity. The model is cached under ``--out`` (orbax, ``jaxsparse.checkpoint``) and
reused by every run with the same model, data and training flags. Then, with
``jaxsparse.oneshot.prune`` (sequential, as in the papers):

* held-out perplexity against sparsity (unstructured and N:M) for magnitude, Wanda and
  SparseGPT, with the dense model and a random mask (the shape of Sun et al., Table 2);
* each layer's relative reconstruction error ``‖XW − XŴ‖ / ‖XW‖``;
* perplexity against the number of calibration sequences;
* the time to prune the whole model per method and the process's peak memory;
* sparse fine-tuning with ``masked(adam)``, and the dense model trained as long;
* a classifier (``--no-vision`` skips it): LeNet-300-100 trained dense on real MNIST
  digits (``--vision-data digits``: the 8x8 digits), its hidden layers pruned by each
  method at 50-90% and 2:4 from 512 training images; test accuracy against a random mask.

Run::

    jaxsparse oneshot              # default study (~15 min on 2 idle cores)
    jaxsparse oneshot --quick      # smoke test, seconds
"""

from experiments.harness import Study
from experiments.oneshot.config import OneShotConfig
from experiments.oneshot.run import run_study

STUDY = Study(OneShotConfig, run_study, __doc__)
