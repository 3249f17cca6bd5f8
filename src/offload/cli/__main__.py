"""``python -m offload.cli``."""

import sys

from offload.cli.app import main

sys.exit(main())
