import sys

from experiments.lottery import main

sys.exit(main())
