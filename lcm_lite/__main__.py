"""``python -m lcm_lite "a prompt"``."""

import sys

from .cli import main

sys.exit(main())
