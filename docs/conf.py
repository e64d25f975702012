"""Sphinx configuration: markdown pages (MyST) plus numpydoc API docstrings."""

import lowbit

project = "lowbit"
release = lowbit.__version__
extensions = ["myst_parser", "sphinx.ext.autodoc", "numpydoc"]
numpydoc_class_members_toctree = False
suppress_warnings = ["autosummary"]
source_suffix = {".md": "markdown"}
exclude_patterns = ["_build"]
numpydoc_show_class_members = False
