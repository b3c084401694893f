import sys

from workflowd.cli import main

sys.exit(main())
