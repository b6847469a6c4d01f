"""``TINY_ENCODER`` and ``REPO`` of tests/conftest.py for test modules.

``from conftest import ...`` is ambiguous here: tests/data has a conftest.py of its own, and
whichever pytest loaded last owns the name ``conftest``. This loads the root one by its path.
"""

import importlib.util
from pathlib import Path

_spec = importlib.util.spec_from_file_location("_eossl_tests_root_conftest",
                                               Path(__file__).with_name("conftest.py"))
_root = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_root)

TINY_ENCODER = _root.TINY_ENCODER
REPO = _root.REPO
