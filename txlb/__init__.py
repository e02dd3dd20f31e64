"""
txlb: a transparent Layer 7 (HTTP) load balancer built on Twisted.
"""

#: The one place txlb's version is written: setup.py, the docs, C{--version}
#: and the admin API's C{/status} read it from here.
__version__ = "0.1.0"
__all__ = ["__version__", "versionLine"]


def versionLine() -> str:
    """
    What C{twistd txlb --version} and C{txlb-replay --version} print:
    txlb's version, with the Twisted and the Python it runs on.
    """
    import platform

    from twisted import __version__ as twisted

    python = f"{platform.python_implementation()} {platform.python_version()}"
    return f"txlb {__version__} (Twisted {twisted}, {python})"
