"""A secured Temporal for tests: throwaway certificates and a TLS proxy to the dev server.

The dev server (``temporal server start-dev``) speaks only plaintext, so
:class:`TLSProxy` stands in front of it as a secured cluster or Temporal Cloud would:
a gRPC server with TLS (mTLS when it is given a client CA) and, when it is given an API
key, refusing every call without ``authorization: Bearer <key>``. Calls it accepts go on
to the dev server as raw bytes, with their metadata, deadline and errors.
:class:`Sniffer` notes the first bytes of every connection made to it, to tell a TLS
ClientHello from HTTP/2's plaintext preface.
"""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

# Metadata gRPC sets per hop; the rest (namespace, client name, ...) goes on upstream.
HOP_METADATA = {"authorization", "user-agent", "te", "content-type", "grpc-accept-encoding"}
UNLIMITED = [("grpc.max_receive_message_length", -1), ("grpc.max_send_message_length", -1)]


@dataclass(frozen=True)
class Issued:
    """A certificate and its key, as PEM files."""

    cert: Path
    key: Path


class Authority:
    """A throwaway CA that issues server and client certificates as PEM files in ``dir``."""

    def __init__(self, dir: Path, name: str) -> None:
        self.dir, self.name = dir, name
        self.key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{name} CA")])
        self.cert = (
            _builder(subject, subject, self.key.public_key())
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    key_cert_sign=True,
                    crl_sign=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .sign(self.key, hashes.SHA256())
        )
        self.pem = self.cert.public_bytes(serialization.Encoding.PEM)
        self.path = dir / f"{name}-ca.pem"
        self.path.write_bytes(self.pem)

    def server(self, name: str, local: bool = True) -> Issued:
        """A server certificate for the DNS name ``name`` (and, if ``local``, 127.0.0.1)."""
        sans: list[x509.GeneralName] = [x509.DNSName(name)]
        if local:
            sans.append(x509.IPAddress(ipaddress.ip_address("127.0.0.1")))
        return self._issue(name, sans, ExtendedKeyUsageOID.SERVER_AUTH)

    def client(self, name: str) -> Issued:
        """A client certificate for mTLS."""
        return self._issue(name, [x509.DNSName(name)], ExtendedKeyUsageOID.CLIENT_AUTH)

    def _issue(
        self, name: str, sans: Sequence[x509.GeneralName], usage: x509.ObjectIdentifier
    ) -> Issued:
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        cert = (
            _builder(subject, self.cert.subject, key.public_key())
            .add_extension(x509.SubjectAlternativeName(list(sans)), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .sign(self.key, hashes.SHA256())
        )
        issued = Issued(self.dir / f"{self.name}-{name}.pem", self.dir / f"{self.name}-{name}.key")
        issued.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        issued.key.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        return issued


def _builder(
    subject: x509.Name, issuer: x509.Name, key: ec.EllipticCurvePublicKey
) -> x509.CertificateBuilder:
    now = datetime.datetime.now(datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
    )


class TLSProxy:
    """A gRPC server with TLS in front of ``upstream`` (a plaintext Temporal frontend).

    ``client_ca``: clients must present a certificate it issued (mTLS). ``api_key``: calls
    without ``authorization: Bearer <api_key>`` are refused as UNAUTHENTICATED.
    ``calls`` counts the calls forwarded, ``refused`` those refused; ``namespaces`` are
    those the calls named in their ``temporal-namespace`` header.
    """

    def __init__(
        self,
        upstream: str,
        server: Issued,
        client_ca: Authority | None = None,
        api_key: str | None = None,
    ) -> None:
        self.upstream, self.server, self.client_ca, self.api_key = (
            upstream,
            server,
            client_ca,
            api_key,
        )
        self.calls = self.refused = 0
        self.namespaces: set[str] = set()  # as a regional endpoint routes: by this header
        self.address = ""
        self._server: grpc.aio.Server | None = None
        self._channel: grpc.aio.Channel | None = None

    async def __aenter__(self) -> TLSProxy:
        self._channel = grpc.aio.insecure_channel(self.upstream, options=UNLIMITED)
        self._server = grpc.aio.server(handlers=[_Forward(self)], options=UNLIMITED)
        credentials = grpc.ssl_server_credentials(
            [(self.server.key.read_bytes(), self.server.cert.read_bytes())],
            root_certificates=self.client_ca.pem if self.client_ca else None,
            require_client_auth=self.client_ca is not None,
        )
        port = self._server.add_secure_port("127.0.0.1:0", credentials)
        await self._server.start()
        self.address = f"127.0.0.1:{port}"
        return self

    async def __aexit__(self, *_: object) -> None:
        assert self._server is not None and self._channel is not None
        await self._server.stop(grace=None)
        await self._channel.close()

    async def forward(
        self, method: str, request: bytes, context: grpc.aio.ServicerContext
    ) -> bytes:
        metadata = tuple(context.invocation_metadata() or ())
        if self.api_key is not None and ("authorization", f"Bearer {self.api_key}") not in metadata:
            self.refused += 1
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, "API key not accepted")
        assert self._channel is not None
        self.calls += 1
        self.namespaces.update(v for k, v in metadata if k == "temporal-namespace")
        call = self._channel.unary_unary(method)
        onward = [(k, v) for k, v in metadata if k not in HOP_METADATA and not k.startswith(":")]
        try:
            response: bytes = await call(request, metadata=onward, timeout=context.time_remaining())
        except grpc.aio.AioRpcError as error:
            await context.abort(error.code(), error.details() or "", error.trailing_metadata())
        return response


class _Forward(grpc.GenericRpcHandler):
    """Every method, unary to unary as raw bytes (Temporal's services have no streams)."""

    def __init__(self, proxy: TLSProxy) -> None:
        self.proxy = proxy

    def service(self, details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler:
        method: str = details.method  # type: ignore[attr-defined]

        async def handle(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
            return await self.proxy.forward(method, request, context)

        return grpc.unary_unary_rpc_method_handler(handle)


class Sniffer:
    """A TCP listener that keeps the first bytes of each connection and hangs up."""

    def __init__(self) -> None:
        self.openings: list[bytes] = []
        self.address = ""
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> Sniffer:
        self._server = await asyncio.start_server(self._opened, "127.0.0.1", 0)
        self.address = f"127.0.0.1:{self._server.sockets[0].getsockname()[1]}"
        return self

    async def __aexit__(self, *_: object) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    async def _opened(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            self.openings.append(await asyncio.wait_for(reader.read(24), 5))
        except TimeoutError:
            self.openings.append(b"")
        writer.close()
