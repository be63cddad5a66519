"""``python -m essl`` (also under ``torchrun -m essl``)."""

import sys

from essl.cli import main

sys.exit(main())
