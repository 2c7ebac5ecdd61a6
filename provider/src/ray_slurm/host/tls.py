"""TLS between every process of a cluster: clients authenticate the cluster before the token.

Token authentication lets the cluster check its clients, but a client sends the token to
whatever listens at the head's address: a neighbour who holds a port the head published (or
released) would be sent it. With TLS, a client's first bytes are a handshake that the server
must answer with a certificate signed by the cluster's own CA; the token goes only inside a
channel whose server proved that. Ray verifies both sides (its servers ask for a client
certificate whenever a CA is given), so the CA also keeps other accounts off every gRPC port.

- The **CA** is made at each head launch (``new_ca``): its key and certificate in one file,
  ``<cluster dir>/tls/ca.pem`` (0600, the user's own directory), so a reader never pairs the key
  of one CA with the certificate of another. A new head means a new CA (and a new token):
  nothing issued for an earlier head is trusted by a later one.
- Every **host** that runs a process of the cluster (a node's job, the login head, a driver's
  host, a burst pod) issues its own key and certificate for all of its addresses (``issue``),
  into a directory only the user can read: Ray's clients check the server's address against
  the certificate (an IP SAN; also given as a DNS name, as Ray's own test certificates do).
- ``ray_env`` is what Ray reads: ``RAY_USE_TLS`` and the three paths.

Elliptic-curve keys (P-256): issuing a host's certificate costs about a millisecond. This module
needs only the standard library and ``cryptography``: a burst pod runs its source (``main``) in
an image that has Ray but not this package.
"""

from __future__ import annotations

import datetime
import fcntl
import ipaddress
import os
import socket
import struct
import sys
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

CA_FILE = "ca.pem"  # in <cluster dir>/tls: the CA's key and certificate
CERT, KEY, CA_CERT = "tls.crt", "tls.key", "ca.crt"  # in a host's private directory
CA_ENV = "RAY_SLURM_TLS_CA"  # a burst pod gets the CA from the cluster's Secret here
CA_DAYS = 400  # a head may run for months; a new head gets a new CA anyway
SIOCGIFADDR = 0x8915  # Linux: an interface's IPv4 address
CLOCK_SKEW = datetime.timedelta(minutes=10)  # hosts' clocks differ a little


class TLSError(RuntimeError):
    """The cluster's CA is missing or unreadable; the message names the file."""


def _name(text: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, text)])


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())  # fmt: skip


def _write(path: Path, data: bytes) -> None:
    """Write ``path`` atomically, 0600 from the first byte (its directory is private)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def new_ca(ca_file: Path, cluster_name: str) -> None:
    """A new CA for the cluster, replacing any earlier one: key and certificate in
    ``ca_file`` (0600; its directory must be the user's private one)."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    name = _name(f"ray-slurm CA of cluster {cluster_name}")
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(now + datetime.timedelta(days=CA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(key, hashes.SHA256())
    )
    _write(ca_file, _pem_key(key) + cert.public_bytes(serialization.Encoding.PEM))


def read_ca(ca_file: Path) -> bytes:
    try:
        return ca_file.read_bytes()
    except OSError as exc:
        raise TLSError(f"cannot read the cluster's CA {ca_file}: {exc.strerror} (it is made "
                       "when the head starts: run `ray up`)") from None  # fmt: skip


def _load_ca(ca_pem: bytes) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    try:
        key = serialization.load_pem_private_key(ca_pem, password=None)
        cert = x509.load_pem_x509_certificate(ca_pem)
    except ValueError as exc:
        raise TLSError(f"the cluster's CA cannot be read: {exc}") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise TLSError("the cluster's CA has no elliptic-curve key")
    return key, cert


def host_addresses(extra: tuple[str, ...] = ()) -> list[str]:
    """This host's IPv4 addresses, one per interface, and ``extra`` (a server's certificate
    must name the address a client dials: the node's address for Ray, which ``extra`` gives)."""
    found = set(extra) | {"127.0.0.1"}
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for _, name in socket.if_nameindex():
            try:
                packed = fcntl.ioctl(
                    s.fileno(), SIOCGIFADDR, struct.pack("256s", name[:15].encode())
                )
            except OSError:
                continue  # an interface without an IPv4 address
            found.add(socket.inet_ntoa(packed[20:24]))
    return sorted(found)


def issue(ca_pem: bytes, out_dir: Path, addresses: list[str]) -> dict[str, str]:
    """This host's key and certificate for ``addresses``, signed by the cluster's CA (``ca_pem``:
    its key and certificate), and a copy of the CA's certificate, in ``out_dir`` (the caller's
    private directory); returns Ray's TLS variables for them."""
    ca_key, ca_cert = _load_ca(ca_pem)
    key = ec.generate_private_key(ec.SECP256R1())
    ips = [ipaddress.ip_address(a) for a in addresses]
    names: list[x509.GeneralName] = [x509.DNSName("localhost")]
    names += [x509.IPAddress(ip) for ip in ips] + [x509.DNSName(str(ip)) for ip in ips]
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(socket.gethostname()))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(ca_cert.not_valid_after_utc)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    _write(out_dir / KEY, _pem_key(key))
    _write(out_dir / CERT, cert.public_bytes(serialization.Encoding.PEM))
    _write(out_dir / CA_CERT, ca_cert.public_bytes(serialization.Encoding.PEM))
    return ray_env(out_dir)


def ray_env(out_dir: Path) -> dict[str, str]:
    """Ray's TLS variables for the files ``issue`` wrote in ``out_dir``."""
    return {
        "RAY_USE_TLS": "1",
        "RAY_TLS_SERVER_CERT": str(out_dir / CERT),
        "RAY_TLS_SERVER_KEY": str(out_dir / KEY),
        "RAY_TLS_CA_CERT": str(out_dir / CA_CERT),
    }


def issued_by(out_dir: Path, ca_pem: bytes) -> bool:
    """Whether ``out_dir`` holds a certificate of this CA (a client host reuses it until the
    next head brings a new CA)."""
    try:
        ours = x509.load_pem_x509_certificate((out_dir / CA_CERT).read_bytes())
        (out_dir / KEY).stat()
        (out_dir / CERT).stat()
    except (OSError, ValueError):
        return False
    return ours == _load_ca(ca_pem)[1]


def main(argv: list[str] | None = None) -> int:
    """A burst pod's own certificate: ``python -c <this module's source> --out DIR --ip IP``,
    with the CA in ``$RAY_SLURM_TLS_CA`` (from the cluster's Secret). The image needs Python
    and ``cryptography`` only (Ray's images have both), not this package."""
    import argparse

    parser = argparse.ArgumentParser(prog="ray-slurm-tls")
    parser.add_argument("--out", required=True, help="a private directory for the files")
    parser.add_argument("--ip", action="append", default=[], help="an address to certify")
    args = parser.parse_args(argv)
    try:
        issue(os.environ[CA_ENV].encode(), Path(args.out), host_addresses(tuple(args.ip)))
    except (KeyError, TLSError, OSError) as exc:
        print(f"ray-slurm: cannot make this node's TLS certificate: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
