import sys

from experiments.early_bird import main

sys.exit(main())
