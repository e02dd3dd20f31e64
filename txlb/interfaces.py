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


class IExchange(Interface):
    """
    One request as the backend client sees the one who sent it: where the
    response goes.  The proxy's exchange provides it.
    """

    producer = Attribute(
        "The connection the response body comes from, set from the final head"
        " to the end of the body: pause, resume or stop it."
    )

    def connected():
        """
        A new connection was made for the request (not a pooled one).
        """

    def interim(head):
        """
        An interim (1xx) L{txlb.http1.ResponseHead} arrived, before the final
        one.
        """

    def bodyReceived(data):
        """
        Bytes of the response body arrived.
        """

    def bodyEnded(reason, data=b""):
        """
        The body ended: whole if C{reason} is L{None}, else cut short (a
        L{Failure}); C{data} is its last bytes, if they came with the end.
        L{producer} is no longer the exchange's.
        """
