"""
Packaging for txlb.

C{twisted.plugins} is listed by hand: it must not have an C{__init__.py}
(Twisted scans it as a namespace of plugin files), so C{find_packages} cannot
see it.
"""

import re
from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).parent
#: The version is written once, in txlb/__init__.py (read, not imported:
#: txlb's dependencies may not be installed yet).
VERSION = re.search(
    r'^__version__ = "([^"]+)"$',
    (HERE / "txlb" / "__init__.py").read_text(encoding="utf-8"),
    re.MULTILINE,
).group(1)

#: Debian's pypy3 (PyPy 7.3.11): Python 3.9.
PYPY39 = 'platform_python_implementation == "PyPy" and python_version < "3.10"'
NOT_PYPY39 = 'platform_python_implementation != "PyPy" or python_version >= "3.10"'

setup(
    name="txlb",
    version=VERSION,
    description="A transparent Layer 7 (HTTP) load balancer built on Twisted",
    long_description=(HERE / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="MIT",
    python_requires=">=3.9",  # Debian's pypy3; see docs/deploying.md, "PyPy"
    packages=[*find_packages(exclude=["tests", "tests.*"]), "twisted.plugins"],
    install_requires=[
        # tls: for --listen ssl:...; http2: hyper-h2, which txlb's HTTP/2
        # connection (txlb/http2.py) speaks through.  txlb uses a few
        # private Twisted APIs, all in txlb/_twisted.py, which
        # tests/test_twisted.py pins on these versions.  Twisted 26.10 and
        # later need Python 3.10.
        f"twisted[tls,http2]>=26.4; {NOT_PYPY39}",
        # Debian's pypy3 gets no cryptography newer than 43.0.3: later
        # releases have no PyPy 3.9 wheel, and building one needs Rust and
        # crates.io.  pyOpenSSL 25.2+ needs cryptography 45.0.7+, and
        # service-identity 26.1 needs 47+.  Twisted 26.4's tls extra needs
        # pyOpenSSL 25.2, and treq needs that extra, so Twisted 25.5 is the
        # newest that installs there.
        f"twisted[tls,http2]>=25.5,<26.4; {PYPY39}",
        f"cryptography<44; {PYPY39}",
        f"pyopenssl<25.2; {PYPY39}",
        f"service-identity<25; {PYPY39}",
        'tomli>=1.1; python_version < "3.11"',  # tomllib before 3.11
        "treq>=26.7",
        "zope.interface>=5",
        "prometheus-client>=0.20",
    ],
    entry_points={"console_scripts": ["txlb-replay = txlb.replay:main"]},
    extras_require={
        "dev": ["ruff", "mypy<2", "mypy-zope"],  # mypy 2 no longer checks for Python 3.9
        # What the tests need beyond txlb's own dependencies (tox.ini's deps).
        "test": ["autobahn", "hypothesis", "h11>=0.16"],
        # bench/run.py's chart, and txlb-replay --plot.
        "bench": ["matplotlib"],
    },
)
