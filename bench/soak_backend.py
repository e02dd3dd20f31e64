"""
One backend for the fault soak (bench/soak.py): one process, one port.

    python bench/soak_backend.py PORT LOGFILE

It listens on 127.0.0.1:PORT and speaks just enough HTTP/1.1 (persistent
connections, C{Content-Length} bodies) for the soak:

  - C{GET /health}: 200 C{ok};
  - C{GET /item?n=TOKEN}: 200 C{item TOKEN from :PORT}, so the client can
    check that it got the answer to its own request;
  - C{POST /order} with an C{X-Order-Id: ID} header and the body
    C{{"id": "ID"}}: 201 C{created ID on :PORT}.  The id is appended to
    LOGFILE as soon as the request head has arrived, whatever the fault
    mode, as one line C{ID MODE}.  Each line is one C{write()} to a file
    opened with C{O_APPEND}, so it survives a C{SIGKILL}, and a restarted
    backend appends to the same file: an id on two lines of the soak's
    backend logs reached a backend twice;
  - C{POST /_fault?mode=ok|hang|reset}: switch the fault mode at run time
    (C{GET /_fault} shows it).  This control path is never faulty.

The fault modes apply to every other request, C{/health} included:

  - C{ok}: answer normally;
  - C{hang}: read the request head, then never answer.  A connection that
    hung stays hung (it keeps reading and dropping whatever arrives) until
    the peer closes it, even after the mode is back to C{ok};
  - C{reset}: abort the connection with a TCP RST (C{SO_LINGER} 0, then
    C{abortConnection()}) right after the request head has arrived.

The hand-written parser is deliberate: Twisted's web server only shows a
request once its body has been read, and C{reset} must act on the head.
"""

import os
import socket
import struct
import sys
from urllib.parse import parse_qs

from twisted.internet import reactor
from twisted.internet.protocol import Factory
from twisted.protocols.basic import LineReceiver

HOST = "127.0.0.1"
MODES = ("ok", "hang", "reset")
REASONS = {
    200: b"OK",
    201: b"Created",
    400: b"Bad Request",
    404: b"Not Found",
    405: b"Method Not Allowed",
}


class BackendState:
    """
    What every connection of one backend process shares: its port, the
    fault mode and the order log.
    """

    def __init__(self, port, logPath):
        self.port = port
        self.mode = "ok"
        self.logFd = os.open(logPath, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def logOrder(self, orderId):
        """
        Append C{ID MODE} to the order log in one unbuffered write.
        """
        os.write(self.logFd, f"{orderId} {self.mode}\n".encode())


class BackendProtocol(LineReceiver):
    """
    One client connection (txlb's, or the soak's control requests).
    """

    delimiter = b"\r\n"
    MAX_LENGTH = 65536

    def __init__(self, state):
        self.state = state
        self.hung = False
        self._newRequest()

    def _newRequest(self):
        self.method = None
        self.target = b""
        self.version = b""
        self.headers = {}
        self.length = 0
        self.body = b""

    def lineReceived(self, line):
        """
        The request line, a header line, or the empty line ending the head.
        """
        if self.hung:
            return
        if self.method is None:
            if not line:
                return  # a stray empty line between requests
            parts = line.split(b" ")
            if len(parts) != 3:
                self._respond(400, b"bad request line\n", close=True)
                return
            self.method, self.target, self.version = parts
        elif line:
            name, sep, value = line.partition(b":")
            if not sep:
                self._respond(400, b"bad header line\n", close=True)
                return
            self.headers[name.strip().lower()] = value.strip()
        else:
            self._headReceived()

    def _headReceived(self):
        """
        Apply the fault mode now that the whole head is here, then read the
        body if there is one.
        """
        path = self.target.partition(b"?")[0]
        control = path == b"/_fault"
        if self.method == b"POST" and path == b"/order":
            orderId = self.headers.get(b"x-order-id", b"").decode("ascii", "replace")
            if orderId:
                self.state.logOrder(orderId)
        mode = "ok" if control else self.state.mode
        if mode == "reset":
            self.hung = True
            self._reset()
            return
        if mode == "hang":
            self.hung = True
            self.setRawMode()  # keep reading (to see the peer close), drop it all
            return
        try:
            self.length = int(self.headers.get(b"content-length", b"0"))
        except ValueError:
            self.length = -1
        if self.length < 0 or b"transfer-encoding" in self.headers:
            self._respond(400, b"only Content-Length bodies\n", close=True)
            return
        if self.length:
            self.setRawMode()
        else:
            self._requestReceived()

    def rawDataReceived(self, data):
        """
        Body bytes; anything past the body is the next request.
        """
        if self.hung:
            return
        self.body += data
        if len(self.body) >= self.length:
            rest = self.body[self.length :]
            self.body = self.body[: self.length]
            self._requestReceived()
            if not self.hung and self.transport.connected:
                self.setLineMode(rest)

    def _reset(self):
        """
        Abort the connection so that the peer sees a TCP RST.
        """
        try:
            self.transport.getHandle().setsockopt(
                socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
            )
        except OSError:
            pass
        self.transport.abortConnection()

    def _requestReceived(self):
        """
        Answer one complete request.
        """
        path, _, query = self.target.partition(b"?")
        params = parse_qs(query.decode("ascii", "replace"))
        port = self.state.port
        if path == b"/_fault":
            self._control(params)
        elif path == b"/health":
            self._respond(200, b"ok\n")
        elif path == b"/item" and self.method in (b"GET", b"HEAD"):
            token = params.get("n", [""])[0]
            self._respond(200, f"item {token} from :{port}\n".encode())
        elif path == b"/order" and self.method == b"POST":
            self._order()
        elif path in (b"/item", b"/order"):
            self._respond(405, b"method not allowed\n")
        else:
            self._respond(404, b"not found\n")

    def _order(self):
        """
        C{POST /order}: the body must carry the id of the X-Order-Id header.
        """
        orderId = self.headers.get(b"x-order-id", b"").decode("ascii", "replace")
        if not orderId:
            self._respond(400, b"missing X-Order-Id\n")
        elif self.body != f'{{"id": "{orderId}"}}'.encode():
            self._respond(400, b"the body does not carry the X-Order-Id\n")
        else:
            self._respond(201, f"created {orderId} on :{self.state.port}\n".encode())

    def _control(self, params):
        """
        C{/_fault}: show the mode, or switch it with C{POST ?mode=...}.
        """
        if self.method == b"POST":
            mode = params.get("mode", [""])[0]
            if mode not in MODES:
                self._respond(400, f"mode must be one of {', '.join(MODES)}\n".encode())
                return
            self.state.mode = mode
        self._respond(200, f"mode {self.state.mode}\n".encode())

    def _respond(self, status, body, close=False):
        """
        Write one response; close afterwards if asked or if the client
        does not keep the connection alive.
        """
        connection = self.headers.get(b"connection", b"").lower()
        if self.version != b"HTTP/1.1" and connection != b"keep-alive":
            close = True
        if connection == b"close":
            close = True
        head = [
            b"HTTP/1.1 %d %s" % (status, REASONS[status]),
            b"Content-Type: text/plain",
            b"Content-Length: %d" % len(body),
        ]
        if close:
            head.append(b"Connection: close")
        payload = b"" if self.method == b"HEAD" else body
        self.transport.write(b"\r\n".join(head) + b"\r\n\r\n" + payload)
        self._newRequest()
        if close:
            self.hung = True
            self.transport.loseConnection()


class BackendFactory(Factory):
    """
    Makes a L{BackendProtocol} per connection, all sharing one state.
    """

    noisy = False

    def __init__(self, state):
        self.state = state

    def buildProtocol(self, addr):
        return BackendProtocol(self.state)


def main(argv):
    """
    Listen on 127.0.0.1:PORT and log orders to LOGFILE until killed.
    """
    if len(argv) != 2 or not argv[0].isdigit():
        sys.exit("usage: python bench/soak_backend.py PORT LOGFILE")
    port = int(argv[0])
    state = BackendState(port, argv[1])
    reactor.listenTCP(port, BackendFactory(state), backlog=128, interface=HOST)
    print(f"soak backend listening on {HOST}:{port}, logging orders to {argv[1]}", flush=True)
    reactor.run()


if __name__ == "__main__":
    main(sys.argv[1:])
