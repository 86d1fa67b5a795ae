"""A throwaway certificate authority of one: a self-signed certificate for 127.0.0.1 (an IP SAN), made at
test time, and a loopback https server of files that records every request it is sent.

A bot process trusts the certificate when ``SSL_CERT_FILE`` names it in the process's environment: OpenSSL
reads that variable when a default SSL context loads its verify paths, which aiohttp does at import time.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import ssl
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

HOST = "127.0.0.1"


@dataclass(frozen=True)
class Certificate:
    cert: Path  # PEM: what a client's SSL_CERT_FILE names to trust it
    key: Path  # PEM, unencrypted


def self_signed(directory: Path, name: str = "loopback", host: str = HOST) -> Certificate:
    """A new key and a self-signed certificate for ``host`` (an IP address), valid for a day, written as
    ``name.pem`` and ``name.key`` into ``directory``. It is its own CA, so trusting it trusts only it."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"imagebot test {name}")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(host))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                     crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    made = Certificate(directory / f"{name}.pem", directory / f"{name}.key")
    made.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    made.key.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return made


@dataclass(frozen=True)
class Served:
    status: int
    body: bytes
    content_type: str


@dataclass(frozen=True)
class Request:
    method: str
    path: str


@dataclass
class HttpsFiles:
    """An https server on 127.0.0.1 (port 0) answering GET ``path`` with what ``serve`` set for it
    (404 for anything else); ``requests`` lists every request that got past the TLS handshake."""

    certificate: Certificate
    files: dict[str, Served] = field(default_factory=dict)
    requests: list[Request] = field(default_factory=list)
    port: int = 0
    _runner: web.AppRunner | None = None

    def serve(self, path: str, body: bytes, *, status: int = 200, content_type: str = "image/png") -> str:
        """Answer ``path`` with ``body``; the https URL of it."""
        self.files[path] = Served(status, body, content_type)
        return self.url(path)

    def url(self, path: str) -> str:
        return f"https://{HOST}:{self.port}{path}"

    def gets(self, path: str) -> int:
        return sum(1 for r in self.requests if r.method == "GET" and r.path == path)

    async def start(self) -> HttpsFiles:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.certificate.cert, self.certificate.key)
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._answer)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, HOST, 0, ssl_context=context)
        await site.start()
        self.port = int(site._server.sockets[0].getsockname()[1])  # type: ignore[union-attr]
        return self

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _answer(self, request: web.Request) -> web.Response:
        self.requests.append(Request(request.method, request.path))
        served = self.files.get(request.path)
        if request.method != "GET" or served is None:
            return web.Response(status=404 if served is None else 405, text="not here")
        return web.Response(status=served.status, body=served.body, content_type=served.content_type)
