import sys

from experiments.random_pruning import main

sys.exit(main())
