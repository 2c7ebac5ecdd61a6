"""``ray-slurm``: the command-line helpers.

Users run ``ray-slurm env CONFIG`` to point a driver at a cluster. The node scripts run the other
subcommands inside their jobs, so the logic they need (node address lookup, port choice, the
head's address record) is Python, tested once, instead of shell written twice.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import os
import shlex
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from ray_slurm import config, jobscript
from ray_slurm.backends import Backend, LoginBackend, SlurmBackend
from ray_slurm.config import ConfigError, Settings
from ray_slurm.nodemap import NodeAddresses, NodeMapError
from ray_slurm.private import UnsafePathError
from ray_slurm.slurm import Slurm, SlurmError
from ray_slurm.state import ClusterDir, StateLockError, write_private

logger = logging.getLogger("ray_slurm.cli")

# Head ports lie above Ray's worker port range (10002-19999) and Ray Client's per-connection
# servers (from 23000), below the kernel's ephemeral range (32768+) that Ray's random ports use.
PORT_RANGE = (24000, 32000)


def free_ports(count: int, seed: str, port_range: tuple[int, int] = PORT_RANGE) -> list[int]:
    """``count`` ports free on this host right now, starting at a point derived from ``seed``.

    Two jobs on one node have different seeds (job ids), so they start far apart; the bind test
    skips ports another process already holds.
    """
    low, high = port_range
    span = high - low
    start = int(hashlib.sha256(seed.encode()).hexdigest(), 16) % span
    ports: list[int] = []
    for offset in range(span):
        port = low + (start + offset) % span
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("0.0.0.0", port))  # noqa: S104 - probing, Ray binds all interfaces too
            except OSError:
                continue
        ports.append(port)
        if len(ports) == count:
            return ports
    raise RuntimeError(f"fewer than {count} free ports in {low}-{high}")


def cluster_dir_from_config(path: str) -> ClusterDir:
    with open(path) as f:
        cfg = yaml.safe_load(f)
    provider = cfg.get("provider") or {}
    return ClusterDir(provider.get("state_dir", "~/.ray-slurm"), cfg.get("cluster_name", "default"))


def load_config(path: str) -> tuple[Settings, ClusterDir]:
    """A ray-slurm.yaml, checked the way `ray up` checks it (ConfigError lists every problem)."""
    with open(path) as f:
        cfg = yaml.safe_load(f)
    if not isinstance(cfg, dict) or not isinstance(cfg.get("provider"), dict):
        raise ConfigError([f"{path}: not a Ray cluster config (no provider section)"])
    cfg = config.bootstrap(config.fillout_resources(cfg))
    settings = config.load_settings(cfg["provider"], cfg["cluster_name"])
    return settings, ClusterDir(settings.state_dir, settings.cluster_name)


def cmd_render(args: argparse.Namespace) -> int:
    """Print (or write) the exact script each node type submits (dask-jobqueue's job_script())."""
    settings, cluster = load_config(args.config)
    names = [args.node_type] if args.node_type else sorted(settings.node_types)
    head = cluster.read_head()
    address = args.head_address or (f"{head['ip']}:{head['gcs_port']}" if head else "HEAD_IP:PORT")
    for name in names:
        spec = settings.spec(name)
        if spec.backend == "kubernetes":
            if not args.output:  # a pod has no job script: show the pod each node will be
                from ray_slurm.kube import KubernetesBackend

                pod = KubernetesBackend(settings, cluster, on_failure=None).pod(spec, address)
                text = yaml.safe_dump(pod, sort_keys=False)
                print(f"# node type {name} ({spec.kind}): a Kubernetes pod\n{text}")
            continue
        login = spec.backend == "login"
        node_ip = (settings.head_ip or "LOGIN_NODE_IP") if login else ""
        script = jobscript.render(settings, cluster, spec, head_address=address, node_ip=node_ip)
        how = f"bash {script.path}" if login else f"sbatch --parsable {script.path}"
        if args.output:
            path = Path(args.output) / os.path.basename(script.path)
            if not path.exists() or path.read_text() != script.text:
                path.parent.mkdir(parents=True, exist_ok=True)
                write_private(path, script.text, 0o755)
                print(f"changed: {path}")
        else:
            print(f"# node type {name} ({spec.kind}): {how}\n{script.text}")
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    """Check a config against Ray's schema, the provider's rules and this site (check.py)."""
    from ray_slurm import check

    return check.main(args.config, probe_pods=args.probe_pods)


def cmd_status(args: argparse.Namespace) -> int:
    """The cluster's nodes as their backends see them: state, node, address, reason, time left."""
    settings, cluster = load_config(args.config)
    slurm = Slurm(settings.slurm_bin, settings.slurm_timeout_s)
    addresses = NodeAddresses(slurm, settings.node_map)
    head = cluster.read_head()
    rows = [("TYPE", "KIND", "ID", "STATE", "NODE", "IP", "TIME LEFT", "REASON")]
    backends: list[Backend] = [
        LoginBackend(settings, cluster),
        SlurmBackend(settings, slurm, cluster),
    ]
    if settings.kube_types:
        from ray_slurm.kube import KubernetesBackend

        backends.append(KubernetesBackend(settings, cluster, on_failure=None))  # read-only
    for backend in backends:
        for n in sorted(backend.list_nodes(), key=lambda n: (n.kind != "head", n.node_id)):
            if n.backend == "login":
                ip = head["ip"] if head else ""
            else:
                ip = n.ip or (addresses.ip(n.host) if n.host else "")
            rows.append((n.node_type, n.kind, n.node_id, n.state.value, n.host or "-", ip or "-",
                         n.time_left or "-", n.reason or "-"))  # fmt: skip
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    if len(rows) == 1:
        print(f"(no node of cluster {settings.cluster_name})")
    print_failures(cluster.read_state().get("failures", {}))
    if head:
        print(f"autoscaler log: {head['autoscaler_log']} (on {head['host']})")
    return 0


def print_failures(failures: dict[str, dict[str, Any]]) -> None:
    """Node types the head's autoscaler backs off: why, and until when (its state record)."""
    for node_type, record in sorted(failures.items()):
        until = float(record["until"])
        if until > time.time():
            when = "no new node before " + time.strftime("%H:%M:%S", time.localtime(until))
        else:
            when = "trying again, one node at a time until one starts"
        print(f"node type {node_type} failed {record['count']} time(s), {when}: {record['why']}")


NODE_IP_WAIT_S = 180  # a job that starts while slurmctld is away waits this long for it


def cmd_node_ip(args: argparse.Namespace) -> int:
    """This node's address for Ray. A job can start while slurmctld is unreachable (it was
    allocated just before): it waits for SLURM to answer instead of failing, as SLURM jobs
    themselves ride out a controller restart."""
    node = args.node or os.environ.get("SLURMD_NODENAME") or socket.gethostname()
    addresses = NodeAddresses(Slurm(), args.node_map)
    deadline = time.monotonic() + args.wait
    while True:
        try:
            ip = addresses.ip(node)
            break
        except SlurmError as exc:
            if time.monotonic() >= deadline:
                raise
            logger.warning("%s; retrying for up to %.0f s", exc, deadline - time.monotonic())
            time.sleep(5)
    print(ip)
    return 0


def cmd_free_ports(args: argparse.Namespace) -> int:
    print(" ".join(str(p) for p in free_ports(args.count, args.seed)))
    return 0


def cmd_publish_head(args: argparse.Namespace) -> int:
    record = {
        "node_id": args.node_id,
        "ip": args.ip,
        "gcs_port": args.gcs_port,
        "dashboard_port": args.dashboard_port,
        "client_port": args.client_port,
        "temp_dir": args.temp_dir,
        # Ray's own hint (/tmp/ray/session_latest/...) is wrong for per-node temp dirs.
        "autoscaler_log": os.path.join(args.temp_dir, "session_latest", "logs", "monitor.log"),
        "host": socket.gethostname(),
        "started": time.time(),
    }
    ClusterDir.at(args.cluster_dir).publish_head(record)
    return 0


def cmd_wait_head(args: argparse.Namespace) -> int:
    """Wait until the head's Ray answers `ray status` (with the cluster's token)."""
    cluster = ClusterDir.at(args.cluster_dir or os.environ["RAY_SLURM_CLUSTER_DIR"])
    deadline = time.monotonic() + args.timeout
    while time.monotonic() < deadline:
        head = cluster.read_head()
        if head:
            address = f"{head['ip']}:{head['gcs_port']}"
            env = {**os.environ, **head_env(cluster, address)}
            ray = os.path.join(os.path.dirname(sys.executable), "ray")
            proc = subprocess.run([ray, "status", f"--address={address}"], env=env,
                                  capture_output=True, text=True, check=False)  # fmt: skip
            if proc.returncode == 0:
                logger.info("Ray head is up at %s", address)
                return 0
        time.sleep(2)
    logger.error("the head did not come up within %s s; see %s", args.timeout, cluster.logs_dir)
    return 1


def head_env(cluster: ClusterDir, address: str) -> dict[str, str]:
    return {
        "RAY_ADDRESS": address,
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN_PATH": str(cluster.token_file),
    }


def cmd_env(args: argparse.Namespace) -> int:
    """Print the exports a driver needs: `eval "$(ray-slurm env ray-slurm.yaml)"`."""
    cluster = cluster_dir_from_config(args.config)
    head = cluster.read_head()
    if not head:
        logger.error("cluster at %s has no running head: run `ray up %s` first",
                     cluster.root, args.config)  # fmt: skip
        return 1
    print("unset RAY_AUTH_TOKEN")  # Ray would prefer it to the cluster's token file
    for key, value in head_env(cluster, f"{head['ip']}:{head['gcs_port']}").items():
        print(f"export {key}={shlex.quote(value)}")
    dashboard = f"http://{head['ip']}:{head['dashboard_port']}"
    print(f"export RAY_SLURM_DASHBOARD={shlex.quote(dashboard)}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ray-slurm",
        description="Helpers for Ray clusters on SLURM: check, render and inspect a cluster "
        "config, connect drivers; the node scripts use the (in a job) commands.",
        epilog="Exit status: 0 success, 1 failure (or problems found), 2 usage error. "
        "`ray-slurm COMMAND --help` describes each command.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("env", help="print the environment a driver needs to join a cluster")
    p.add_argument("config", help="the cluster's ray-slurm.yaml")
    p.set_defaults(func=cmd_env)

    p = sub.add_parser("render", help="print the script and command a node type submits")
    p.add_argument("config", help="the cluster's ray-slurm.yaml")
    p.add_argument("--node-type", help="one node type (default: all)")
    p.add_argument("--head-address", default="", help="for worker scripts (default: the head's)")
    p.add_argument("--output", default="", help="write <kind>-<type>.sh here if changed")
    p.set_defaults(func=cmd_render)

    p = sub.add_parser(
        "check",
        help="check a config against Ray, the provider and this site; print every problem",
        description="Validate CONFIG as `ray up` does, then against the site: partitions exist, "
        "are up and fit each node type; the node map covers SLURM's nodes; ray_env has ray and "
        "ray-slurm of this version; head_ip is this host's; state dir and token are private; "
        "temp_root and head ports are usable; Kubernetes node types reach their API and may "
        "list pods and secrets in their namespaces. Prints each problem on one line with its fix. "
        "Exit status: 0 ready, 1 problems found, 2 usage error (e.g. CONFIG unreadable).",
    )
    p.add_argument("config", help="the cluster's ray-slurm.yaml")
    p.add_argument("--probe-pods", action="store_true",
                   help="Kubernetes types: start one short-lived pod per namespace to test that "
                   "pods reach this host and this host reaches pods")  # fmt: skip
    p.set_defaults(func=cmd_check)

    p = sub.add_parser("status", help="the cluster's nodes, their jobs and pending reasons")
    p.add_argument("config", help="the cluster's ray-slurm.yaml")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("node-ip", help="(in a job) this node's address for Ray")
    p.add_argument("--wait", type=float, default=NODE_IP_WAIT_S,
                   help="seconds to wait for an unreachable slurmctld")  # fmt: skip
    p.add_argument("--node", help="SLURM node name (default: $SLURMD_NODENAME)")
    p.add_argument("--node-map", default="", help="map file instead of SLURM's NodeAddr")
    p.set_defaults(func=cmd_node_ip)

    p = sub.add_parser("free-ports", help="(in a job) pick free ports on this host")
    p.add_argument("count", type=int, help="how many ports")
    p.add_argument("--seed", required=True, help="e.g. the job id: spreads jobs apart")
    p.set_defaults(func=cmd_free_ports)

    p = sub.add_parser("publish-head", help="(in the head's job) record the head's address")
    p.add_argument("cluster_dir", help="the cluster's state directory")
    p.add_argument("--node-id", required=True, help="the head's provider node id")
    p.add_argument("--ip", required=True, help="the head's address")
    for name in ("--gcs-port", "--dashboard-port", "--client-port"):
        p.add_argument(name, type=int, required=True, help="the head's port of that name")
    p.add_argument("--temp-dir", required=True, help="the head's Ray temp dir (logs are there)")
    p.set_defaults(func=cmd_publish_head)

    p = sub.add_parser("wait-head", help="wait until the cluster's head answers")
    p.add_argument("--cluster-dir", default="", help="default: $RAY_SLURM_CLUSTER_DIR")
    p.add_argument("--timeout", type=float, default=300, help="seconds (default: 300)")
    p.set_defaults(func=cmd_wait_head)
    return parser


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="ray-slurm: %(message)s")
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except ConfigError as exc:  # one line per problem
        for problem in exc.problems:
            logger.error("%s", problem)
        return 1
    except (SlurmError, NodeMapError, UnsafePathError, StateLockError, OSError, KeyError,
            yaml.YAMLError) as exc:  # fmt: skip
        logger.error("%s", exc)
        return 1


if __name__ == "__main__":
    sys.exit(main())
