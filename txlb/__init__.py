"""
txlb: a transparent Layer 7 (HTTP) load balancer built on Twisted.
"""

__version__ = "0.1.0"
__all__ = ["__version__"]
