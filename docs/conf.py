"""Sphinx configuration for pyro-lid."""

import os
import sys

sys.path.insert(0, os.path.abspath(".."))

project = "pyro-lid"
author = "pyro-lid developers"
extensions = ["sphinx.ext.autodoc", "sphinx.ext.napoleon", "sphinx.ext.mathjax", "sphinx.ext.viewcode"]
autodoc_member_order = "bysource"
autodoc_default_options = {"members": True, "show-inheritance": True}
exclude_patterns = ["_build"]
html_theme = "alabaster"
