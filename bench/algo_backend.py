"""
One test backend for bench/algorithms.py: txlb's test backend on one port
of 127.0.0.1, answering after a delay, recording when each request arrived.

  python bench/algo_backend.py PORT DELAY_MS SLOW_MS RECORD [LOAD]

SIGUSR1 switches the delay to SLOW_MS (the backend "turns slow"); SIGTERM
writes C{{"port", "switched", "arrivals"}} as JSON to RECORD (times from
C{time.time()}) and exits.  With LOAD, every answer reports that load in
C{X-Txlb-Load}.  The checkout's txlb is imported (PYTHONPATH).
"""

import json
import signal
import sys
import time

from twisted.internet import reactor
from twisted.web.server import Site

from txlb.testbackend import BackendResource, makeBackendSite


class Recording(BackendResource):
    """
    The test backend, noting each request's arrival.
    """

    def __init__(self, delays, loads):
        super().__init__(delays, loads)
        self.arrivals = []

    def render(self, request):
        self.arrivals.append(time.time())
        return super().render(request)


def main():
    port, delayMs, slowMs, record = (
        int(sys.argv[1]),
        float(sys.argv[2]),
        float(sys.argv[3]),
        sys.argv[4],
    )
    loads = {port: sys.argv[5]} if len(sys.argv) > 5 else {}
    resource = Recording({port: delayMs / 1000}, loads)
    site: Site = makeBackendSite(resource)
    switched = []

    def turnSlow(signum, frame):
        switched.append(time.time())
        resource.delays[port] = slowMs / 1000

    def stop(signum, frame):
        with open(record, "w") as file:
            json.dump(
                {
                    "port": port,
                    "switched": switched[0] if switched else None,
                    "arrivals": resource.arrivals,
                },
                file,
            )
        reactor.callFromThread(reactor.stop)

    signal.signal(signal.SIGUSR1, turnSlow)
    signal.signal(signal.SIGTERM, stop)
    reactor.listenTCP(port, site, interface="127.0.0.1")
    reactor.run(installSignalHandlers=False)


if __name__ == "__main__":
    main()
