"""The toolkit installs as ``eossl_widgets`` (from widgets/), and eossl never imports it."""

import subprocess
import sys


def test_eossl_widgets_imports_from_elsewhere_and_eossl_does_not_import_it(tmp_path):
    code = ("import sys, eossl; assert 'eossl_widgets' not in sys.modules and 'ipyleaflet' not in sys.modules; "
            "import eossl_widgets; assert 'widgets' not in sys.modules; print(eossl_widgets.__name__)")
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "eossl_widgets"
