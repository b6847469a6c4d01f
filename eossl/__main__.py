"""``python -m eossl ...`` (and ``torchrun ... -m eossl pretrain CONFIG.yaml``)."""

import sys

from eossl.cli import main

sys.exit(main())
