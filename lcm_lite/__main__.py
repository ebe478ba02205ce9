"""``python -m lcm_lite "a prompt"``."""

import sys

from lcm_lite.cli.main import main

sys.exit(main())
