import sys

from experiments.early_bird import STUDY

sys.exit(STUDY.main())
