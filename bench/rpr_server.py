"""
Baseline for the benchmark: Twisted's stock reverse proxy.

Usage::

    python bench/rpr_server.py PORT BACKEND_PORT [LOGFILE]

Listens on 127.0.0.1:PORT and forwards C{/ping} to
C{http://127.0.0.1:BACKEND_PORT/ping} with
L{twisted.web.proxy.ReverseProxyResource}.  ReverseProxyResource talks to a
single backend and opens a new backend connection for every request.

If LOGFILE is given, Twisted logging (including the Site's one access-log line
per request) is written there the same way C{twistd --logfile} does it, so the
baseline pays the same logging cost as a twistd-run load balancer.
"""

import sys

from twisted.internet import reactor
from twisted.python import log
from twisted.python.logfile import LogFile
from twisted.web.proxy import ReverseProxyResource
from twisted.web.resource import Resource
from twisted.web.server import Site


def main(argv):
    """
    Parse C{argv}, start the proxy and run the reactor until terminated.
    """
    if len(argv) not in (3, 4):
        sys.exit("usage: rpr_server.py PORT BACKEND_PORT [LOGFILE]")
    port, backendPort = int(argv[1]), int(argv[2])
    if len(argv) == 4:
        log.startLogging(LogFile.fromFullPath(argv[3]), setStdout=False)
    root = Resource()
    # A child named "ping" whose base path is /ping: GET /ping is forwarded
    # as GET /ping (anything else gets the Resource 404 without a backend).
    root.putChild(b"ping", ReverseProxyResource("127.0.0.1", backendPort, b"/ping"))
    reactor.listenTCP(port, Site(root), interface="127.0.0.1")
    reactor.run()


if __name__ == "__main__":
    main(sys.argv)
