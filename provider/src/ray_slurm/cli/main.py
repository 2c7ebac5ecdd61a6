"""``ray-slurm``: the command-line helpers.

Users run ``ray-slurm env CONFIG`` to point a driver at a cluster. A head's script runs
``publish-head`` inside its job, so the head's address record is Python, tested once, instead of
shell written twice. (The node address and ports every node script needs come from the quicker
``ray-slurm-node``: ``jobnode``.)
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shlex
import socket
import subprocess
import sys
import time
from pathlib import Path

import yaml

from ray_slurm import config
from ray_slurm.backends import factory as backends
from ray_slurm.backends.nodes import PORTS_TAKEN_EXIT
from ray_slurm.backends.slurm.client import Slurm, SlurmError
from ray_slurm.backends.slurm.formats import NodeMapError
from ray_slurm.cli import check, headlife, status
from ray_slurm.config import ConfigError, Settings
from ray_slurm.host.private import UnsafePathError
from ray_slurm.host.state import ClusterDir, StateLockError, write_private
from ray_slurm.host.tls import TLSError

logger = logging.getLogger("ray_slurm.cli.main")


def cluster_dir_from_config(path: str) -> ClusterDir:
    """The cluster's directory from its yaml as written (``config.cluster_dir``), not the whole
    config checked: a running cluster is found even if its yaml changed since ``ray up``."""
    with open(path) as f:
        cfg = yaml.safe_load(f)
    if (shape := config.not_a_cluster_config(cfg, path)) is not None:
        raise ConfigError([shape])
    return config.cluster_dir(cfg["provider"], cfg.get("cluster_name", "default"))


def load_config(path: str) -> tuple[Settings, ClusterDir]:
    """A ray-slurm.yaml, checked the way `ray up` checks it (ConfigError lists every problem)."""
    _, settings = config.load_file(path).required()
    return settings, ClusterDir(settings.state_dir, settings.cluster_name)


def cmd_render(args: argparse.Namespace) -> int:
    """Print (or write) the exact script each node type submits (dask-jobqueue's job_script())."""
    settings, cluster = load_config(args.config)
    if args.prune and (args.node_type or not args.output):
        print("ray-slurm render: --prune needs --output and all node types (no --node-type)",
              file=sys.stderr)  # fmt: skip
        return check.EXIT_USAGE
    names = [args.node_type] if args.node_type else sorted(settings.node_types)
    head = cluster.head()
    address = args.head_address or (head.address if head else "HEAD_IP:PORT")
    held = backends.make(settings, cluster, Slurm(settings.slurm_bin, settings.slurm_timeout_s))
    written = set()
    for name in names:
        spec = settings.spec(name)
        preview = held[spec.backend].preview(spec, address)
        if not args.output:
            print(f"# node type {name} ({spec.kind}): {preview.how}\n{preview.text}")
        elif preview.file_name:  # what a node submits from the jobs directory
            path = Path(args.output) / preview.file_name
            written.add(path.name)
            if not path.exists() or path.read_text() != preview.text:
                path.parent.mkdir(parents=True, exist_ok=True)
                write_private(path, preview.text, 0o755)
                print(f"changed: {path}")
    if args.output and args.prune:  # the scripts of node types the config no longer has
        for stale in sorted(Path(args.output).glob("*.sh")):
            if stale.name not in written:
                stale.unlink()
                print(f"removed: {stale}")
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    """Check a config against Ray's schema, the provider's rules and this site (``check``)."""
    return check.main(args.config, probe_pods=args.probe_pods)


def cmd_validate(args: argparse.Namespace) -> int:
    """The config alone, as `ray up` checks it (no site): for tools such as the Ansible role."""
    try:
        loaded = config.load_file(args.config, on_site=not args.off_site)
    except OSError as exc:
        print(f"ray-slurm validate: cannot read {args.config}: {exc.strerror or exc}",
              file=sys.stderr)  # fmt: skip
        return check.EXIT_USAGE
    if args.json:
        print(json.dumps({"config": args.config, "problems": [
            {"field": p.field, "message": p.message, "fix": p.fix} for p in loaded.problems
        ]}, indent=1))  # fmt: skip
    else:
        for problem in loaded.problems:
            print(check.line(problem))
        if not loaded.problems:
            print(f"{args.config}: valid")
    return 1 if loaded.problems else 0


def cmd_status(args: argparse.Namespace) -> int:
    """The cluster's nodes as their backends see them (``status``)."""
    return status.show(*load_config(args.config))


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


def cmd_head_ended(args: argparse.Namespace) -> int:
    """(the head's script, as it exits) ``headlife.head_ended``."""
    headlife.head_ended(ClusterDir.at(args.cluster_dir), args.temp_dir)
    return 0


def cmd_hold_ports(args: argparse.Namespace) -> int:
    """(a node's script, after `ray start`) ``headlife.hold_ports`` for the head (which has a
    record: ``--temp-dir``), else ``hold_node_ports``; exits PORTS_TAKEN_EXIT if another
    account holds one of the ports."""
    if args.temp_dir:
        cluster = ClusterDir.at(args.cluster_dir)
        check = headlife.hold_ports(cluster, args.temp_dir, args.ray_pid, args.timeout,
                                    args.agent_ports, args.metrics_port)  # fmt: skip
    else:
        check = headlife.hold_node_ports(args.agent_ports, args.ray_pid, args.timeout,
                                         args.metrics_port)  # fmt: skip
    return 0 if check.held else PORTS_TAKEN_EXIT if check.taken else 1


def cmd_drain(args: argparse.Namespace) -> int:
    """(a worker's script, on USR1) ``drain.drain``: prints the deadline for the script."""
    from ray_slurm.cli import drain  # imports Ray: only where a node drains

    job_id = args.job_id or os.environ["SLURM_JOB_ID"]
    deadline = drain.drain(ClusterDir.at(args.cluster_dir), args.address, job_id, args.warning)
    print(int(deadline))
    return 0


def cmd_wait_head(args: argparse.Namespace) -> int:
    """Wait until the head's Ray answers `ray status` (with the cluster's token)."""
    cluster = ClusterDir.at(args.cluster_dir or os.environ["RAY_SLURM_CLUSTER_DIR"])
    deadline = time.monotonic() + args.timeout
    while time.monotonic() < deadline:
        if failed := cluster.head_failure():
            logger.error("the head did not start: %s", failed)
            return 1
        head = cluster.head()
        if head and head.ports_held:  # never before Ray holds the ports it published
            address = head.address
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
    """A client's environment on this host: the head's address, its token and TLS."""
    return {
        "RAY_ADDRESS": address,
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN_PATH": str(cluster.token_file),
        **cluster.client_tls(),
    }


def cmd_env(args: argparse.Namespace) -> int:
    """Print the exports a driver needs: `eval "$(ray-slurm env ray-slurm.yaml)"`."""
    cluster = cluster_dir_from_config(args.config)
    head = cluster.head()
    if not head:
        logger.error("cluster at %s has no running head: run `ray up %s` first",
                     cluster.root, args.config)  # fmt: skip
        return 1
    if not head.ports_held:
        logger.error("the head of the cluster at %s is still starting (Ray does not hold all "
                     "of its ports yet): run `ray up %s` and wait for it", cluster.root,
                     args.config)  # fmt: skip
        return 1
    try:
        gone = headlife.head_is_gone(cluster, head)
        env = {} if gone else head_env(cluster, head.address)
    except TLSError as exc:
        logger.error("%s", exc)
        return 1
    if gone:  # its address may be anyone's by now: no client is sent there
        logger.error("the head of the cluster at %s no longer runs (%s): run `ray up %s`",
                     cluster.root, gone, args.config)  # fmt: skip
        return 1
    print("unset RAY_AUTH_TOKEN")  # Ray would prefer it to the cluster's token file
    for key, value in env.items():
        print(f"export {key}={shlex.quote(value)}")
    dashboard = f"http://{head.dashboard}"
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
    p.add_argument("--prune", action="store_true",
                   help="with --output: remove the other *.sh there (node types no longer in "
                   "the config); needs all node types")  # fmt: skip
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

    p = sub.add_parser(
        "validate",
        help="check a config as `ray up` does (no site checks); print every problem",
        description="Validate CONFIG with the provider's own rules, as `ray up` does, without "
        "looking at the site: for tools (the Ansible site role runs it on the config it "
        "renders). Exit status: 0 valid, 1 problems found, 2 usage error.",
    )
    p.add_argument("config", help="the cluster's ray-slurm.yaml")
    p.add_argument("--json", action="store_true",
                   help="print {config, problems: [{field, message, fix}]} as JSON")  # fmt: skip
    p.add_argument("--off-site", action="store_true",
                   help="checked away from the site the config is for (e.g. on an Ansible "
                   "controller): the node map file and the Ray/Python versions Kubernetes "
                   "images must match are left to `ray up` and `ray-slurm check`")  # fmt: skip
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser("status", help="the cluster's nodes, their jobs and pending reasons")
    p.add_argument("config", help="the cluster's ray-slurm.yaml")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("publish-head", help="(in the head's job) record the head's address")
    p.add_argument("cluster_dir", help="the cluster's state directory")
    p.add_argument("--node-id", required=True, help="the head's provider node id")
    p.add_argument("--ip", required=True, help="the head's address")
    for name in ("--gcs-port", "--dashboard-port", "--client-port"):
        p.add_argument(name, type=int, required=True, help="the head's port of that name")
    p.add_argument("--temp-dir", required=True, help="the head's Ray temp dir (logs are there)")
    p.set_defaults(func=cmd_publish_head)

    p = sub.add_parser("head-ended", help="(in the head's job) the head is gone: forget its "
                       "address, cancel its workers")  # fmt: skip
    p.add_argument("cluster_dir", help="the cluster's state directory")
    p.add_argument("--temp-dir", required=True, help="the head's Ray temp dir (which head)")
    p.set_defaults(func=cmd_head_ended)

    p = sub.add_parser("hold-ports", help="(in a node's job) wait until Ray holds the node's "
                       "ports; fail, naming the holder, if another has one")  # fmt: skip
    p.add_argument("cluster_dir", help="the cluster's state directory")
    p.add_argument("--temp-dir", default="", help="the head's Ray temp dir (which head); "
                   "a worker has none")  # fmt: skip
    p.add_argument(
        "--agent-ports",
        type=int,
        nargs=len(headlife.AGENT_PORT_NAMES),
        required=True,
        metavar="PORT",
        help="the node's " + ", ".join(headlife.AGENT_PORT_NAMES) + " ports",
    )
    p.add_argument("--metrics-port", type=int, default=0,
                   help="its metrics export port, where the site opens it")  # fmt: skip
    p.add_argument("--ray-pid", type=int, required=True, help="the node's `ray start`")
    p.add_argument("--timeout", type=float, default=120, help="seconds (default: 120)")
    p.set_defaults(func=cmd_hold_ports)

    p = sub.add_parser("drain", help="(in a worker's job) its end is near: drain its Ray node "
                       "until then; print the deadline")  # fmt: skip
    p.add_argument("cluster_dir", help="the cluster's state directory")
    p.add_argument("--address", required=True, help="the head's GCS address")
    p.add_argument("--job-id", default="", help="default: $SLURM_JOB_ID")
    p.add_argument(
        "--warning",
        type=float,
        required=True,
        help="seconds to the job's end if SLURM does not say (its walltime warning)",
    )
    p.set_defaults(func=cmd_drain)

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
