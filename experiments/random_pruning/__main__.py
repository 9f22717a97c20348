import sys

from experiments.random_pruning import STUDY

sys.exit(STUDY.main())
