"""`python -m bench [--quick] [--peers] [--out PATH]`, or `python -m bench chaos [...]`: see
`bench.run`."""

import sys

from bench.run import main

sys.exit(main())
