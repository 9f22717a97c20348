import sys

from experiments.transfer import main

sys.exit(main())
