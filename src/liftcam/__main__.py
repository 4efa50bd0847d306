"""``python -m liftcam``: the same command line as ``liftcam``."""

import sys

from .cli import main

sys.exit(main())
