import sys

from experiments.early_bert import main

sys.exit(main())
