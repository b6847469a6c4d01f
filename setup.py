"""The package list for setuptools; everything else is in pyproject.toml.

The widget toolkit lives in widgets/ but installs as ``eossl_widgets`` (no generic top-level
``widgets`` module in users' environments). pyproject.toml cannot combine that package-dir mapping
with automatic package discovery, so the list is computed here and new eossl subpackages are
picked up without anyone having to remember to list them.
"""

from setuptools import find_packages, setup

setup(packages=find_packages(include=["eossl", "eossl.*"]) + ["eossl_widgets"],
      package_dir={"eossl_widgets": "widgets"})
