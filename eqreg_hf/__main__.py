"""``python -m eqreg_hf ...``: the same as the ``eqreg-hf`` command."""

import sys

from eqreg_hf.cli import main

sys.exit(main())
