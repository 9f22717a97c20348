import sys

from experiments.elastic import STUDY

sys.exit(STUDY.main())
