import sys

from experiments.oneshot import STUDY

sys.exit(STUDY.main())
