import sys

from experiments.elastic import main

sys.exit(main())
