"""`python -m bench [--quick] [--peers] [--out PATH]`: see `bench.run`."""

import sys

from bench.run import main

sys.exit(main())
