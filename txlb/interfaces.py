"""
The interfaces of txlb.
"""

from zope.interface import Attribute, Interface


class IAlgorithm(Interface):
    """
    A load-balancing algorithm: it picks the backend for each request.

    An algorithm is made with the backends it chooses from, as
    C{Algorithm(backends)} (other arguments, if any, have defaults), and
    keeps whatever state it needs (a cursor, current weights, latencies).
    It reads each backend's C{active} count, C{weight}, C{capacity(now)}
    and C{reportedLoad(now)} but never changes a backend: the proxy and the
    pool do.  A new object is made whenever the backends or their weights
    change, so state kept in the algorithm starts again then.

    Backends in slow start, down or already tried for the request are not
    among the candidates: the pool has left them out before C{pick} is
    called, so every algorithm gets slow start and retries alike.

    An algorithm that wants to learn how each backend answers also provides
    L{IResponseObserver}; the proxy checks that once per algorithm, so the
    others pay nothing for it.

    An algorithm whose picks never depend on the weights (round robin,
    least connections) says so with a class attribute C{usesWeights =
    False}, and the status page then leaves the weights out.  Without the
    attribute, weights are taken to matter: it is optional, so that
    policies written before it still verify.
    """

    name = Attribute("The C{--algo} name of this algorithm, as C{str}.")

    backends = Attribute("The L{txlb.backend.Backend}s it picks from, in order.")

    def pick(request, candidates):
        """
        Choose the backend for a request: called once when it arrives, and
        again for each retry.

        @param request: The L{twisted.web.iweb.IRequest} being forwarded
            (a L{twisted.web.server.Request}).  Algorithms read it and
            change nothing: C{getClientAddress()}, C{method}, C{uri} (the
            raw request-target), C{requestHeaders} and C{getCookie(name)}.
            (Not C{path} or C{args}: Twisted sets them only once a request
            body is all in, and txlb forwards before.)
        @param candidates: The backends that may take this request, never
            empty: those of C{backends} that are up, not held back by slow
            start for this pick and not yet tried for it (all that are up,
            if every one was tried; all of them, if none is up).  A sequence
            the algorithm must not keep or change.
        @return: One of C{candidates}.  An exception is a bug: the client
            gets a 500.
        """


class IResponseObserver(Interface):
    """
    An algorithm that learns from each response (optional, beside
    L{IAlgorithm}).
    """

    def answered(backend, seconds):
        """
        C{backend} sent a response head, C{seconds} after the request was
        sent to it (after it arrived, for the first try).  A load the
        backend reported in that head is already in
        C{backend.reportedLoad}.  Called on the request's path: it must be
        quick and must not raise.
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
        The body ended: whole if C{reason} is C{None}, else cut short (a
        L{Failure<twisted.python.failure.Failure>}); C{data} is its last
        bytes, if they came with the end.  L{producer} is no longer the
        exchange's.
        """


class IRouter(Interface):
    """
    A route's choice of pool, in Python: a C{[[routes]]} entry with
    C{router = "package.module:Name"} makes C{Name()} (with no arguments)
    when the routes are loaded, checks it with C{verifyObject}, and asks it
    for each request that meets the route's conditions.
    """

    def route(request):
        """
        The pool for a request, or C{None} to let the next route decide.

        Called on the request's path: it must be quick, must not block, and
        should change nothing.  An exception, or an answer that is not the
        name of a pool, is counted and logged (at most once a minute) and
        the request falls through to the next route, as for C{None}.

        @param request: The L{twisted.web.iweb.IRequest} being routed (a
            L{twisted.web.server.Request}), as L{IAlgorithm.pick} gets it:
            read its C{method}, C{uri} (the raw request-target),
            C{requestHeaders}, C{getClientAddress()} and
            C{getCookie(name)}; not C{path} or C{args}, which are set only
            once the body is all in.
        @return: The name of a pool (C{str}), or C{None}.
        """
