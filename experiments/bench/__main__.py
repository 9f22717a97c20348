import sys

from experiments.bench import STUDY

sys.exit(STUDY.main())
