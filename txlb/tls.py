"""
TLS to C{https://} backends: how txlb connects to them, and what a failed
handshake is called.

By default a backend's certificate is verified against the system's CA
store, for the backend's host name (or C{--backend-sni}), with Twisted's
C{optionsForClientTLS}; C{--backend-ca} trusts only the given CAs, and
C{--backend-cert}/C{--backend-key} present a client certificate (mutual
TLS).  C{--backend-insecure} verifies nothing, but still sends the server
name.  The settings are read once, at start-up or on a reload; each
connection then costs one handshake, and a pooled connection none.
"""

from __future__ import annotations

import re
from typing import Any

from OpenSSL import SSL, crypto
from service_identity import VerificationError
from twisted.internet.abstract import isIPAddress, isIPv6Address
from twisted.internet.error import VerifyError
from twisted.internet.interfaces import IOpenSSLClientConnectionCreator
from twisted.internet.ssl import (
    Certificate,
    CertificateOptions,
    KeyPair,
    PrivateCertificate,
    optionsForClientTLS,
    platformTrust,
    trustRootFromCertificates,
)
from twisted.python.failure import Failure
from twisted.web.iweb import IPolicyForHTTPS
from zope.interface import implementer

from txlb.backend import HOSTNAME

_PEM_CERTIFICATE = re.compile(
    rb"-----BEGIN CERTIFICATE-----\r?\n.+?\r?\n-----END CERTIFICATE-----", re.DOTALL
)


def _read(option: str, path: str) -> bytes:
    try:
        with open(path, "rb") as file:
            return file.read()
    except OSError as e:
        raise ValueError(f"{option}: {path}: {e.strerror or e}") from None


def loadCertificates(option: str, path: str) -> list[Certificate]:
    """
    The certificates of the PEM file at C{path}, in order.

    @raise ValueError: With one line, if it cannot be read or holds none.
    """
    blocks = _PEM_CERTIFICATE.findall(_read(option, path))
    if not blocks:
        raise ValueError(f"{option}: {path}: no PEM certificate in the file")
    try:
        return [Certificate.loadPEM(block) for block in blocks]
    except crypto.Error:
        raise ValueError(f"{option}: {path}: a certificate in the file cannot be read") from None


def loadClientCertificate(
    certPath: str,
    keyPath: str,
    certOption: str = "--backend-cert",
    keyOption: str = "--backend-key",
) -> PrivateCertificate:
    """
    The client certificate (the first one of C{certPath}) with its private
    key (C{keyPath}), both PEM; errors name the options they came from.

    @raise ValueError: With one line, if either cannot be read or the key
        is not the certificate's.
    """
    certificate = loadCertificates(certOption, certPath)[0]
    try:
        key = KeyPair.load(_read(keyOption, keyPath), SSL.FILETYPE_PEM)
    except crypto.Error:
        raise ValueError(f"{keyOption}: {keyPath}: no PEM private key in the file") from None
    try:
        return PrivateCertificate.fromCertificateAndKeyPair(certificate, key)
    except VerifyError:
        raise ValueError(
            f"{keyOption}: {keyPath}: not the key of the certificate in {certPath}"
        ) from None


@implementer(IOpenSSLClientConnectionCreator)
class _Unverified:
    """
    Client connections that send the server name but verify nothing
    (C{--backend-insecure}).
    """

    def __init__(self, serverName: str, clientCertificate: PrivateCertificate | None) -> None:
        options: dict[str, Any] = {"verify": False}
        if clientCertificate is not None:
            options.update(
                privateKey=clientCertificate.privateKey.original,
                certificate=clientCertificate.original,
            )
        self._context = CertificateOptions(**options).getContext()
        self._serverName = serverName

    def clientConnectionForTLS(self, tlsProtocol: Any) -> SSL.Connection:
        connection = SSL.Connection(self._context, None)
        connection.set_app_data(tlsProtocol)
        name = self._serverName
        if not (isIPAddress(name) or isIPv6Address(name)):
            # As optionsForClientTLS does: SNI carries DNS names only (RFC 6066).
            connection.set_tlsext_host_name(name.encode("ascii"))
        return connection


@implementer(IPolicyForHTTPS)
class BackendTLS:
    """
    The TLS settings of the connections to C{https://} backends.

    It is also the policy of the health checks' Agent, so the checks
    connect as requests do.

    @ivar trustRoot: The CAs trusted (the system's by default).
    @ivar clientCertificate: The client certificate sent, if any.
    @ivar serverName: The name sent (SNI) and verified for every backend,
        instead of each backend's host.
    @ivar insecure: Whether certificates go unverified.
    """

    def __init__(
        self,
        trustRoot: Any = None,
        clientCertificate: PrivateCertificate | None = None,
        serverName: str | None = None,
        insecure: bool = False,
    ) -> None:
        self.trustRoot = trustRoot
        self.clientCertificate = clientCertificate
        self.serverName = serverName
        self.insecure = insecure
        self._creators: dict[str, Any] = {}

    def creator(self, host: str) -> Any:
        """
        The connection creator for a backend on C{host}: its certificate is
        verified for L{serverName}, or else for C{host}.
        """
        name = self.serverName or host
        creator = self._creators.get(name)
        if creator is None:
            if self.insecure:
                creator = _Unverified(name, self.clientCertificate)
            else:
                creator = optionsForClientTLS(
                    name,
                    trustRoot=self.trustRoot or platformTrust(),
                    clientCertificate=self.clientCertificate,
                )
            self._creators[name] = creator
        return creator

    def creatorForNetloc(self, hostname: bytes, port: int) -> Any:
        """
        L{IPolicyForHTTPS}, for the health checks' Agent.
        """
        return self.creator(hostname.decode("ascii"))


def fromOptions(
    ca: str | None,
    cert: str | None,
    key: str | None,
    sni: str | None,
    insecure: bool,
) -> BackendTLS:
    """
    The settings the C{--backend-*} options describe.

    @raise ValueError: With one line saying what is wrong.
    """
    if (cert is None) != (key is None):
        raise ValueError("--backend-cert and --backend-key go together: give both")
    if insecure and ca is not None:
        raise ValueError("--backend-insecure verifies nothing: drop --backend-ca")
    if sni is not None and not HOSTNAME.fullmatch(sni):
        raise ValueError(f"--backend-sni: {sni!r} is not a host name")
    trustRoot = None
    if ca is not None:
        trustRoot = trustRootFromCertificates(loadCertificates("--backend-ca", ca))
    clientCertificate = None
    if cert is not None and key is not None:
        clientCertificate = loadClientCertificate(cert, key)
    return BackendTLS(trustRoot, clientCertificate, sni, insecure)


#: What OpenSSL's reasons mean for an operator, most specific first.
_REASONS = (
    ("certificate verify failed", "certificate not trusted (unknown CA, expired or self-signed)"),
    ("certificate required", "the backend requires a client certificate"),
    ("unknown ca", "client certificate refused (unknown CA)"),
    ("bad certificate", "client certificate refused"),
    ("certificate unknown", "client certificate refused"),
    ("wrong version number", "the backend does not speak TLS"),
    ("record layer failure", "the backend does not speak TLS"),
    ("packet length too long", "the backend does not speak TLS"),
)


def isFailure(failure: Failure) -> bool:
    """
    Whether C{failure} is a TLS failure: a handshake that failed, or a
    certificate that does not name the backend.
    """
    return failure.check(SSL.Error, VerificationError) is not None


def failureReason(failure: Failure) -> str | None:
    """
    Why a TLS handshake failed, as the 502 and the log say it (C{"TLS:
    certificate name mismatch"}), or C{None} if C{failure} is not a TLS
    failure.
    """
    error = failure.value
    if isinstance(error, VerificationError):
        return "TLS: certificate name mismatch"
    if not isinstance(error, SSL.Error):
        return None
    # pyOpenSSL's errors: [(library, function, reason), ...]
    entries = error.args[0] if error.args and isinstance(error.args[0], list) else []
    reasons = [str(entry[-1]) for entry in entries if isinstance(entry, tuple) and entry[-1]]
    text = "; ".join(reasons) or str(error) or "handshake failed"
    for openssl, meaning in _REASONS:
        if openssl in text:
            return f"TLS: {meaning} ({text})"
    return f"TLS: {text}"
