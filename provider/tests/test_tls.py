"""TLS between the cluster's processes (ray_slurm.host.tls): who can prove to be the cluster.

The property that matters is the last test's: a Ray client with the cluster's TLS settings that
reaches a neighbour's listener sends it no token (without TLS, it does: the control case).
"""

from __future__ import annotations

import ipaddress
import os
import stat
import subprocess
import sys
from concurrent import futures
from pathlib import Path

import grpc
import pytest
from cryptography import x509

from ray_slurm.host import tls
from ray_slurm.host.state import ClusterDir


@pytest.fixture
def cluster(tmp_path):
    c = ClusterDir(tmp_path / "state", "demo").create()
    c.new_secrets()
    return c


def test_a_host_certificate_is_the_cas_and_names_the_hosts_addresses(cluster, tmp_path):
    out = tmp_path / "node"
    out.mkdir(mode=0o700)
    env = tls.issue(tls.read_ca(cluster.ca_file), out, ["10.1.2.3", "127.0.0.1"])
    assert env == tls.ray_env(out)
    assert env["RAY_USE_TLS"] == "1" and env["RAY_TLS_SERVER_KEY"] == f"{out}/tls.key"
    cert = x509.load_pem_x509_certificate((out / "tls.crt").read_bytes())
    ca = x509.load_pem_x509_certificate((out / "ca.crt").read_bytes())
    cert.verify_directly_issued_by(ca)
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert set(sans.get_values_for_type(x509.IPAddress)) == {
        ipaddress.ip_address("10.1.2.3"), ipaddress.ip_address("127.0.0.1")}  # fmt: skip
    assert "localhost" in sans.get_values_for_type(x509.DNSName)
    for name in ("tls.key", "tls.crt", "ca.crt"):
        assert stat.S_IMODE((out / name).stat().st_mode) == 0o600, name
    assert stat.S_IMODE(cluster.ca_file.stat().st_mode) == 0o600


def test_this_hosts_addresses_include_the_nodes_own():
    addresses = tls.host_addresses(("10.9.9.9",))
    assert "10.9.9.9" in addresses and "127.0.0.1" in addresses


def test_each_head_gets_a_new_token_and_ca(cluster):
    """What leaked from one head (the token, a certificate) opens nothing of the next."""
    token, ca = cluster.token_file.read_text(), cluster.ca_file.read_bytes()
    old_env = cluster.client_tls()
    assert cluster.client_tls() == old_env  # reused while the CA is the same
    old_cert = Path(old_env["RAY_TLS_SERVER_CERT"]).read_bytes()
    cluster.new_secrets()
    assert cluster.token_file.read_text() != token
    assert cluster.ca_file.read_bytes() != ca
    cluster.client_tls()  # issued again, by the new CA
    new = x509.load_pem_x509_certificate(Path(old_env["RAY_TLS_CA_CERT"]).read_bytes())
    with pytest.raises(Exception):  # noqa: B017 - the old certificate is not the new CA's
        x509.load_pem_x509_certificate(old_cert).verify_directly_issued_by(new)


def test_a_missing_ca_is_named(tmp_path):
    with pytest.raises(tls.TLSError, match=r"cannot read the cluster's CA .*ca.pem.*ray up"):
        tls.read_ca(tmp_path / "ca.pem")


# A Ray client, as every process of the cluster and every driver is one: Ray's own gRPC channel
# (token interceptor, TLS from the environment), making one call to ADDRESS.
CLIENT = """
import sys, grpc
from ray._private.grpc_utils import init_grpc_channel
channel = init_grpc_channel(sys.argv[1])
try:
    channel.unary_unary("/ray.rpc.NodeInfoGcsService/GetClusterId")(b"", timeout=3)
except grpc.RpcError as exc:
    print("CALL FAILED", exc.code())
"""


def neighbours_server() -> tuple[grpc.Server, int, list[tuple[str, str]]]:
    """What a neighbour runs on a port she took: a gRPC server that answers every method and
    keeps every header a client sends."""
    seen: list[tuple[str, str]] = []

    class Everything(grpc.GenericRpcHandler):
        def service(self, details):
            seen.extend((k, str(v)) for k, v in details.invocation_metadata)
            return grpc.unary_unary_rpc_method_handler(lambda request, context: b"")

    server = grpc.server(futures.ThreadPoolExecutor(2), handlers=[Everything()])
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    return server, port, seen


@pytest.mark.parametrize("with_tls", [False, True])
def test_a_client_sends_the_token_only_to_the_cluster(cluster, with_tls):
    token = cluster.token_file.read_text().strip()
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(cluster.token_file)}
    if with_tls:
        env.update(cluster.client_tls())
    server, port, seen = neighbours_server()
    try:
        proc = subprocess.run([sys.executable, "-c", CLIENT, f"127.0.0.1:{port}"], env=env,
                              capture_output=True, text=True, timeout=120, check=False)  # fmt: skip
    finally:
        server.stop(0)
    if with_tls:  # the handshake fails: she has no certificate of the cluster's CA
        assert "CALL FAILED" in proc.stdout, proc.stdout + proc.stderr
        assert not any(token in value for _, value in seen), seen
    else:  # the control: without TLS, the neighbour is sent the token
        assert ("authorization", f"Bearer {token}") in seen, (seen, proc.stdout, proc.stderr)
