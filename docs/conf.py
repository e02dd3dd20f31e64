"""
Sphinx configuration of txlb's documentation (MyST Markdown).

Build it with C{tox -e docs} (HTML, warnings as errors) and C{tox -e man}
(the man pages); see README.md in this folder.
"""

import re
import sys
from pathlib import Path

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE / "_ext"))
# The option reference imports txlb from this checkout (its dependencies
# from the environment).
sys.path.insert(0, str(HERE.parent))

project = "txlb"
author = "the txlb authors"
copyright = "the txlb authors"
# One place for the version: txlb/__init__.py (read, not imported).
release = version = re.search(
    r'^__version__ = "([^"]+)"',
    (HERE.parent / "txlb" / "__init__.py").read_text(encoding="utf-8"),
    re.MULTILINE,
).group(1)

extensions = ["myst_parser", "txlbdocs"]
source_suffix = {".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build", "README.md"]

# Every [text](page.md#heading) and (#heading) link is checked: headings
# down to ####  get anchors, and a link to a missing page or anchor is a
# warning, which tox's -W makes an error.
myst_heading_anchors = 4
myst_enable_extensions = ["colon_fence", "deflist"]
# References to options ({option}`--listen`) and pages must resolve.
nitpicky = True

# The options each program's reference documents, from the code itself
# (docs/_ext/txlbdocs.py); "" is twistd txlb.
txlb_option_classes = {
    "": "txlb.tap.Options",
    "txlb-replay": "txlb.replay.ReplayOptions",
}

html_theme = "alabaster"
html_title = f"txlb {release}"
html_static_path: list[str] = []

# External links are not fetched during the build (there may be no
# network); `sphinx-build -b linkcheck` checks them where there is.
linkcheck_anchors = False

# man pages: sphinx-build -b man (tox -e man).
man_pages = [
    ("txlb", "txlb", "a transparent HTTP load balancer on Twisted", [author], 8),
    ("txlb-replay", "txlb-replay", "replay a txlb access log through policies", [author], 1),
]
man_make_section_directory = False
man_show_urls = False
smartquotes = False  # "--listen" stays two hyphens
