"""
The interfaces of txlb.
"""

from zope.interface import Attribute, Interface


class IAlgorithm(Interface):
    """
    A load-balancing algorithm: it picks the backend for each request.

    An algorithm is made with the backends it chooses from and keeps whatever
    state it needs (a cursor, an expanded schedule).  It reads each backend's
    C{active} count but never changes it: the proxy does.
    """

    name = Attribute("The C{--algo} name of this algorithm, as L{str}.")

    backends = Attribute("The L{txlb.backend.Backend}s it picks from, in order.")

    def pick(clientHost, candidates):
        """
        Choose the backend for the next request.

        @param clientHost: The client's IP address, as L{str}.
        @param candidates: The backends that may take this request: those of
            C{backends} that are up and not yet tried for it, never empty.
        @return: One of C{candidates}.
        """
