import sys

from experiments.early_bert import STUDY

sys.exit(STUDY.main())
