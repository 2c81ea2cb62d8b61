"""`python -m midigen.train [overrides]`: the same app as `midigen train`."""

import sys

from midigen.errors import exit_status
from midigen.train.app import run_cli

raise SystemExit(exit_status(run_cli, sys.argv[1:]))
