"""``scripts/kube-standin up|down|status``: the stand-in as a background service of the local site.

``up`` starts the server inside the site's login namespace (its address is the one pods and the
Ray head reach), waits until it serves, and writes a kubeconfig with a fresh bearer token; it is
idempotent. ``down`` stops the server (which stops every pod process), then deletes whatever cloud
host is left, so it also cleans up after a server that was killed; it is idempotent too.
Everything lives in one state directory, and the server's pid is recorded there.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from . import cloudhosts

log = logging.getLogger("kube_standin.launcher")

DEFAULT_STATE = Path(os.environ.get("RAYHPC_KUBE_DIR", "/var/tmp/rayhpc-localsite/kube"))
KUBECONFIG = """\
# Written by scripts/kube-standin up: the local Kubernetes API stand-in (plain HTTP).
apiVersion: v1
kind: Config
clusters:
- name: kube-standin
  cluster:
    server: {url}
contexts:
- name: kube-standin
  context:
    cluster: kube-standin
    user: kube-standin
    namespace: {namespace}
current-context: kube-standin
users:
- name: kube-standin
  user:
    token: {token}
"""


def _pid(state: Path) -> int | None:
    """The server's pid if it is alive and really our server (not a recycled pid)."""
    try:
        pid = int((state / "server.pid").read_text())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (OSError, ValueError):
        return None
    if b"kube_standin.server" not in cmdline or stat.rsplit(")", 1)[1].split()[0] == "Z":
        return None
    return pid


def _ready(state: Path) -> dict | None:
    try:
        return json.loads((state / "ready").read_text())
    except (OSError, ValueError):
        return None


def up(args: argparse.Namespace, server_args: list[str]) -> int:
    state: Path = args.state_dir
    kubeconfig = state / "kubeconfig"
    if _pid(state) and (ready := _ready(state)):
        if len(ready["hosts"]) != args.hosts:
            log.error("running with %d cloud hosts; run 'down' first to get %d",
                      len(ready["hosts"]), args.hosts)  # fmt: skip
            return 1
        print(f"kube-standin: already running; KUBECONFIG={kubeconfig}")
        return 0
    if not cloudhosts.exists(args.login_ns):
        log.error("network namespace %s not found: run 'scripts/localsite up' first", args.login_ns)
        return 1
    down(args)  # a dead server's leftovers (hosts, files) go first
    state.mkdir(parents=True, exist_ok=True)
    state.chmod(0o700)
    token_file = state / "token"
    token_file.write_text(secrets.token_urlsafe(32) + "\n")
    token_file.chmod(0o600)
    command = [
        "nsenter",
        f"--net={cloudhosts.NETNS_DIR / args.login_ns}",
        sys.executable,
        "-m",
        "kube_standin.server",
        "--state-dir",
        str(state),
        "--token-file",
        str(token_file),
        "--port",
        str(args.port),
        "--hosts",
        str(args.hosts),
        "--login-ns",
        args.login_ns,
        *server_args,
    ]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    with open(state / "server.log", "ab") as out:
        proc = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
    (state / "server.pid").write_text(f"{proc.pid}\n")
    deadline = time.monotonic() + args.timeout
    while (ready := _ready(state)) is None:
        if proc.poll() is not None or time.monotonic() > deadline:
            tail = (state / "server.log").read_text(errors="replace").splitlines()[-15:]
            log.error(
                "server did not start (exit %s); server.log ends:\n%s", proc.poll(), "\n".join(tail)
            )
            down(args)
            return 1
        time.sleep(0.1)
    namespace = _first_namespace(server_args)
    token = token_file.read_text().strip()
    kubeconfig.write_text(KUBECONFIG.format(url=ready["url"], token=token, namespace=namespace))
    kubeconfig.chmod(0o600)
    hosts = ", ".join(f"{h['name']}={h['ip']}" for h in ready["hosts"])
    print(f"kube-standin: up at {ready['url']} (pid {proc.pid}), cloud hosts {hosts}")
    print(f"KUBECONFIG={kubeconfig}")
    return 0


def _first_namespace(server_args: list[str]) -> str:
    """The kubeconfig context's namespace: the first --namespace given to the server."""
    for i, arg in enumerate(server_args):
        if arg.startswith("--namespace="):
            return arg.split("=", 1)[1]
        if arg == "--namespace" and i + 1 < len(server_args):
            return server_args[i + 1]
    return "default"


def down(args: argparse.Namespace) -> int:
    state: Path = args.state_dir
    pid = _pid(state)
    if pid is not None:
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 20
        while _pid(state) == pid and time.monotonic() < deadline:
            time.sleep(0.1)
        if _pid(state) == pid:
            log.warning("server %d still alive after 20 s: SIGKILL", pid)
            os.kill(pid, signal.SIGKILL)
    try:
        hosts = (state / "hosts").read_text().split()
    except FileNotFoundError:
        hosts = []
    for name in hosts:
        cloudhosts.destroy(name)
    shutil.rmtree(f"/tmp/kst.{args.port}", ignore_errors=True)
    for name in ("server.pid", "ready", "hosts", "kubeconfig", "token"):
        (state / name).unlink(missing_ok=True)
    if pid is not None or hosts:
        print("kube-standin: down")
    return 0


def status(args: argparse.Namespace) -> int:
    state: Path = args.state_dir
    pid, ready = _pid(state), _ready(state)
    if pid is None or ready is None:
        print(f"kube-standin: not running (state dir {state})")
        return 1
    print(f"kube-standin: running, pid {pid}, {ready['url']}, KUBECONFIG={state / 'kubeconfig'}")
    # The API is only reachable inside the login namespace: enter it (this process only).
    with open(cloudhosts.NETNS_DIR / args.login_ns) as netns:
        os.setns(netns.fileno(), os.CLONE_NEWNET)
    token = (state / "token").read_text().strip()
    request = urllib.request.Request(  # noqa: S310 - our own http:// URL
        f"{ready['url']}/api/v1/pods", headers={"Authorization": f"Bearer {token}"}
    )
    with urllib.request.urlopen(request, timeout=5) as answer:  # noqa: S310 - our own http URL
        pods = json.load(answer)["items"]
    for host in ready["hosts"]:
        print(
            f"host {host['name']} {host['ip']}: {len(cloudhosts.pids_in(host['name']))} processes"
        )
    for pod in pods:
        meta, st = pod["metadata"], pod.get("status", {})
        print(
            f"pod {meta['namespace']}/{meta['name']} {st.get('phase')} "
            f"{pod['spec'].get('nodeName', '-')} {st.get('podIP', '-')}"
        )
    return 0


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="kube-standin: %(message)s")
    p = argparse.ArgumentParser(
        prog="scripts/kube-standin",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Options after 'up' that are not listed here go to the "
        "server (python -m kube_standin.server --help).",
    )
    p.add_argument("command", choices=["up", "down", "status"])
    p.add_argument("--state-dir", type=Path, default=DEFAULT_STATE)
    p.add_argument("--port", type=int, default=16443)
    p.add_argument("--hosts", type=int, default=2)
    p.add_argument("--login-ns", default="rsl-login")
    p.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for the server")
    args, rest = p.parse_known_args(argv)
    if os.geteuid() != 0:
        log.error("must run as root (network namespaces)")
        return 1
    if rest and args.command != "up":
        p.error(f"unrecognized arguments: {' '.join(rest)}")
    if args.command == "up":
        return up(args, rest)
    return down(args) if args.command == "down" else status(args)


if __name__ == "__main__":
    sys.exit(main())
