"""
Packaging for txlb.

C{twisted.plugins} is listed by hand: it must not have an C{__init__.py}
(Twisted scans it as a namespace of plugin files), so C{find_packages} cannot
see it.
"""

from setuptools import find_packages, setup

setup(
    name="txlb",
    version="0.1.0",
    description="A transparent Layer 7 (HTTP) load balancer built on Twisted",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="MIT",
    python_requires=">=3.11",  # tomllib
    packages=[*find_packages(exclude=["tests", "tests.*"]), "twisted.plugins"],
    install_requires=[
        # The raw request-target relies on the private
        # Agent._requestWithEndpoint; the tests pin its behaviour, and these
        # are the versions they were run against.
        "twisted[tls]>=26.10",  # tls: for --listen ssl:...
        "treq>=26.7",
        "zope.interface>=5",
        "prometheus-client>=0.20",
    ],
    extras_require={
        "dev": ["ruff", "mypy", "mypy-zope"],
        # What the tests need beyond txlb's own dependencies (tox.ini's deps).
        "test": ["autobahn", "hypothesis", "h11>=0.16"],
    },
)
