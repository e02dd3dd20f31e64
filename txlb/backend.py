"""
A backend server and the state txlb keeps about it.
"""

from __future__ import annotations

from twisted.web.client import URI


class Backend:
    """
    One backend: where it is, its weight, and how many requests it has in
    flight.

    @ivar address: C{host:port} (C{[v6]:port}), for logs, error pages and
        the IP hash.
    @ivar uri: The backend's root as an Agent L{URI}: Agent takes its pool key
        from it, and the C{Host} header of a request that came without one.
    @ivar active: Requests sent to this backend whose response has not yet
        been fully relayed, failed or been abandoned by the client.  The proxy
        increments it when it sends a request and decrements it exactly once
        when that request is over; least connections reads it.
    """

    def __init__(self, host: str, port: int, weight: int = 1) -> None:
        self.host = host
        self.port = port
        self.weight = weight
        self.active = 0
        self.address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        self.uri = URI.fromBytes(f"http://{self.address}/".encode("ascii"))
