"""``python -m hmnist``: the same as the ``hmnist`` command."""

import sys

from .cli import main

sys.exit(main())
