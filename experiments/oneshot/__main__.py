import sys

from experiments.oneshot import main

sys.exit(main())
