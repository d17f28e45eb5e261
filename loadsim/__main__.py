"""``python -m loadsim``."""

import sys

from loadsim.cli import main

sys.exit(main())
