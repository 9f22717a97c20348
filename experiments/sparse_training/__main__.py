import sys

from experiments.sparse_training import main

sys.exit(main())
