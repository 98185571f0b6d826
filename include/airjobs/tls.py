"""HTTPS for the service: which certificate the api-server serves, and how its own clients trust it.

* ``AIRJOBS_TLS_CERT`` and ``AIRJOBS_TLS_KEY``: PEM files of a certificate (with its chain, if any) and its key.
* ``AIRJOBS_TLS=self-signed``: a certificate for ``localhost`` (SAN DNS:localhost, IP:127.0.0.1) generated into
  ``$AIRJOBS_VAR/tls/`` and reused while it is valid for another ``RENEW_BEFORE``; its key is mode 0600.

Neither: plain HTTP. Agave's SDKs only speak ``https://<host>`` on the default port (they attach the token
only to a URL without a port): ``AIRJOBS_PORT=443`` with either of the above, as root.

The api-server gets the files as ``[api] ssl_cert`` / ``ssl_key``; the Task SDK's execution API client (workers,
triggerer, dag-processor) loads ``[api] ssl_cert`` as a CA besides certifi's (``airflow/sdk/api/client.py``),
so a self-signed certificate is trusted inside the service without changing any system store.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import ssl
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from airjobs import config

#: a self-signed certificate is made again when it expires within this long
RENEW_BEFORE = dt.timedelta(days=7)
VALID_FOR = dt.timedelta(days=365)
SELF_SIGNED_NAMES = ("localhost",)
SELF_SIGNED_IPS = ("127.0.0.1",)


class TLSConfigError(ValueError):
    """The TLS variables do not describe a usable certificate."""


@dataclass(frozen=True)
class TLS:
    cert: Path
    key: Path
    self_signed: bool
    #: the host name the service's own clients connect to and verify the certificate for
    host: str
    not_after: dt.datetime


def settings() -> TLS | None:
    """The certificate the service serves, from the environment; None for plain HTTP. A self-signed one is
    generated (or reused) here. Raises ``TLSConfigError`` for a half or unknown setting."""
    mode = os.environ.get("AIRJOBS_TLS", "").strip().lower()
    cert, key = os.environ.get("AIRJOBS_TLS_CERT", ""), os.environ.get("AIRJOBS_TLS_KEY", "")
    if mode not in ("", "self-signed"):
        raise TLSConfigError(
            f"AIRJOBS_TLS={mode!r}: the only value is 'self-signed' (or set AIRJOBS_TLS_CERT and AIRJOBS_TLS_KEY)"
        )
    if cert or key:
        if mode:
            raise TLSConfigError("set either AIRJOBS_TLS=self-signed or AIRJOBS_TLS_CERT and AIRJOBS_TLS_KEY")
        if not (cert and key):
            raise TLSConfigError("AIRJOBS_TLS_CERT and AIRJOBS_TLS_KEY go together (PEM files)")
        return _given(Path(cert).resolve(), Path(key).resolve())
    if mode == "self-signed":
        return self_signed(config.var_dir() / "tls")
    return None


def _load(cert: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(cert.read_bytes())


def _names(c: x509.Certificate) -> tuple[list[str], list[str]]:
    try:
        san = c.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return [], []
    return san.get_values_for_type(x509.DNSName), [str(ip) for ip in san.get_values_for_type(x509.IPAddress)]


def _given(cert: Path, key: Path) -> TLS:
    for what, path in (("AIRJOBS_TLS_CERT", cert), ("AIRJOBS_TLS_KEY", key)):
        if not path.is_file():
            raise TLSConfigError(f"{what}={path}: no such file")
    try:
        c = _load(cert)
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(cert, key)
    except (ValueError, ssl.SSLError) as e:
        raise TLSConfigError(
            f"AIRJOBS_TLS_CERT={cert} and AIRJOBS_TLS_KEY={key} are not a PEM certificate and its key: {e}"
        ) from None
    dns, ips = _names(c)
    # the api-server listens on 127.0.0.1 ([api] host): its own clients connect there, by a name the certificate has
    host = "127.0.0.1" if "127.0.0.1" in ips else "localhost" if "localhost" in dns else (dns or ["127.0.0.1"])[0]
    return TLS(cert, key, False, host, c.not_valid_after_utc)


def _reusable(cert: Path, key: Path) -> x509.Certificate | None:
    if not (cert.is_file() and key.is_file()):
        return None
    try:
        c = _load(cert)
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(cert, key)
    except (ValueError, ssl.SSLError):
        return None
    dns, ips = _names(c)
    if sorted(dns) != sorted(SELF_SIGNED_NAMES) or sorted(ips) != sorted(SELF_SIGNED_IPS):
        return None
    if c.not_valid_after_utc - RENEW_BEFORE < dt.datetime.now(dt.UTC):
        return None
    return c


def self_signed(directory: Path) -> TLS:
    """The self-signed certificate for localhost in ``directory`` (``localhost.crt``, ``localhost.key``): the one
    there while it is valid for another ``RENEW_BEFORE`` and names the same hosts, else a new one."""
    cert, key = directory / "localhost.crt", directory / "localhost.key"
    c = _reusable(cert, key)
    if c is None:
        c = _generate(cert, key)
    return TLS(cert, key, True, "127.0.0.1", c.not_valid_after_utc)


def _generate(cert: Path, key: Path) -> x509.Certificate:
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    pk = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, "localhost"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "airjobs (self-signed)"),
        ]
    )
    now = dt.datetime.now(dt.UTC)
    ski = x509.SubjectKeyIdentifier.from_public_key(pk.public_key())
    c = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(pk.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + VALID_FOR)
        .add_extension(
            x509.SubjectAlternativeName(
                [
                    *(x509.DNSName(n) for n in SELF_SIGNED_NAMES),
                    *(x509.IPAddress(ipaddress.ip_address(ip)) for ip in SELF_SIGNED_IPS),
                ]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_encipherment=False,
                content_commitment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(ski, critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False)
        .sign(pk, hashes.SHA256())
    )
    # readable by the users who trust it (the var dir lets them pass through), its key by the service alone
    cert.parent.mkdir(parents=True, exist_ok=True)
    cert.parent.chmod(0o755)
    tmp_key = key.with_suffix(".key.tmp")
    fd = os.open(tmp_key, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(
            pk.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
    tmp_key.chmod(0o600)
    tmp_cert = cert.with_suffix(".crt.tmp")
    tmp_cert.write_bytes(c.public_bytes(serialization.Encoding.PEM))
    tmp_cert.chmod(0o644)
    os.replace(tmp_key, key)
    os.replace(tmp_cert, cert)
    return c


def client_context(tls: TLS) -> ssl.SSLContext:
    """An SSL context that verifies the service's certificate: the system's CAs and the served certificate (as
    the Task SDK's client does)."""
    ctx = ssl.create_default_context()
    ctx.load_verify_locations(cafile=str(tls.cert))
    return ctx


def scheme(tls: TLS | None) -> str:
    return "https" if tls else "http"


def base_url(tls: TLS | None, host: str, port: int) -> str:
    """``scheme://host[:port]``, the port left out when it is the scheme's default."""
    default = 443 if tls else 80
    return f"{scheme(tls)}://{host}" + ("" if port == default else f":{port}")


def trust_hints(tls: TLS) -> list[str]:
    """How a user's client trusts a self-signed certificate (lines to print)."""
    path = tls.cert
    return [
        f"curl: curl --cacert {path} ...",
        f"Python (requests, agavepy; httpx, ssl), instead of the default CA bundle: "
        f"export REQUESTS_CA_BUNDLE={path} SSL_CERT_FILE={path}",
        f"system-wide (Debian/Ubuntu): cp {path} /usr/local/share/ca-certificates/airjobs-localhost.crt && "
        f"update-ca-certificates",
    ]
