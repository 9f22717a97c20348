import sys

from experiments.sparse_training import STUDY

sys.exit(STUDY.main())
