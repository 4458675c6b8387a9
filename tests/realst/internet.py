"""The internet as real SillyTavern sees it in tests: https://nano-gpt.com answered by the fake upstream.

ST's built-in NanoGPT source has ``https://nano-gpt.com/api/v1`` in its code, so it cannot be pointed at
the fake. ST does honour its own ``requestProxy`` setting (``config.yaml``; present from 1.13.5 to 1.19.0,
``src/request-proxy.js``): every outgoing request goes through that proxy. This module is that proxy. A
``CONNECT nano-gpt.com:443`` is answered, the TLS inside is terminated with a certificate from a test CA
that Node trusts through ``NODE_EXTRA_CA_CERTS``, and the decrypted HTTP is relayed byte for byte to the
fake upstream on loopback, so ST speaks to the fake exactly as it would to NanoGPT. Any host without a
route gets ``502``: there is no internet here, and a test that needs one should say so by adding a route.
Hosts ST bypasses (``localhost``, ``127.0.0.1``: the Custom source pointed at the fake directly) never reach
the proxy.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import ssl
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

NANOGPT_HOSTS = ("nano-gpt.com", "api.nano-gpt.com")
HEAD_LIMIT = 64 * 1024
_PIPE_CHUNK = 64 * 1024


@dataclass(frozen=True)
class TestCA:
    """A throwaway certificate authority and one server certificate for the routed host names."""

    ca_pem: Path
    cert_pem: Path
    key_pem: Path

    def server_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(self.cert_pem, self.key_pem)
        return ctx


def make_test_ca(folder: Path, hosts: tuple[str, ...]) -> TestCA:
    folder.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "nanogpt-companion test CA")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
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
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(h) for h in hosts]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    ca_pem = folder / "test-ca.pem"
    cert_pem = folder / "server.pem"
    key_pem = folder / "server-key.pem"
    ca_pem.write_bytes(ca_cert.public_bytes(pem))
    cert_pem.write_bytes(cert.public_bytes(pem))
    key_pem.write_bytes(
        key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return TestCA(ca_pem, cert_pem, key_pem)


@dataclass
class InterceptingProxy:
    """An HTTP proxy that serves routed hosts from loopback servers and refuses every other host."""

    routes: dict[str, tuple[str, int]]
    ca: TestCA
    connects: Counter[str] = field(default_factory=Counter)  # host -> CONNECTs relayed
    refused: Counter[str] = field(default_factory=Counter)  # host -> requests answered 502
    _server: asyncio.Server | None = None
    _tls: ssl.SSLContext | None = None
    port: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        self._tls = self.ca.server_context()
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0, limit=HEAD_LIMIT)
        self.port = int(self._server.sockets[0].getsockname()[1])

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 5)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            writer.close()
            return
        request_line, _, rest = head.partition(b"\r\n")
        parts = request_line.decode("latin-1").split()
        if len(parts) != 3:
            await self._refuse(writer, "?")
            return
        method, target, version = parts
        try:
            if method.upper() == "CONNECT":
                await self._tunnel(target, reader, writer)
            else:
                await self._forward_plain(method, target, version, rest, reader, writer)
        except (ConnectionError, ssl.SSLError, asyncio.IncompleteReadError):
            pass
        finally:
            with contextlib.suppress(Exception):
                writer.close()

    async def _refuse(self, writer: asyncio.StreamWriter, host: str) -> None:
        self.refused[host] += 1
        body = f"no route to {host} in the test internet".encode()
        writer.write(
            b"HTTP/1.1 502 Bad Gateway\r\nContent-Type: text/plain\r\nConnection: close\r\n"
            + f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        with contextlib.suppress(ConnectionError):
            await writer.drain()

    async def _tunnel(self, target: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        host = target.rsplit(":", 1)[0].strip("[]").lower()
        route = self.routes.get(host)
        if route is None:
            await self._refuse(writer, host)
            return
        self.connects[host] += 1
        writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        await writer.drain()
        assert self._tls is not None
        await writer.start_tls(self._tls)
        await self._relay(reader, writer, route, b"")

    async def _forward_plain(
        self,
        method: str,
        target: str,
        version: str,
        rest: bytes,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        # An absolute-form request for plain http:// (ST's proxy agent sends these for http URLs).
        without_scheme = target.split("://", 1)[-1]
        authority, _, path = without_scheme.partition("/")
        host = authority.rsplit(":", 1)[0].strip("[]").lower()
        route = self.routes.get(host)
        if route is None:
            await self._refuse(writer, host)
            return
        self.connects[host] += 1
        first = f"{method} /{path} {version}\r\n".encode("latin-1") + rest
        await self._relay(reader, writer, route, first)

    async def _relay(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        route: tuple[str, int],
        first: bytes,
    ) -> None:
        up_reader, up_writer = await asyncio.open_connection(*route)
        if first:
            up_writer.write(first)

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while chunk := await src.read(_PIPE_CHUNK):
                    dst.write(chunk)
                    await dst.drain()
            except (ConnectionError, ssl.SSLError, asyncio.IncompleteReadError):
                pass
            finally:
                with contextlib.suppress(Exception):
                    if dst.can_write_eof():
                        dst.write_eof()

        try:
            await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        finally:
            with contextlib.suppress(Exception):
                up_writer.close()
