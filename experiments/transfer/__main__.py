import sys

from experiments.transfer import STUDY

sys.exit(STUDY.main())
