import sys

from experiments.lottery import STUDY

sys.exit(STUDY.main())
