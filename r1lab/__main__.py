"""``python -m r1lab <stage>`` (and ``torchrun ... -m r1lab <stage>``): the ``r1lab`` command."""

import sys

from r1lab.cli import main

sys.exit(main())
