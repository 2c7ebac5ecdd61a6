"""The stand-in's process: parse its configuration, build the cloud hosts, serve the API.

It runs inside the login namespace (``scripts/kube-standin up`` starts it there with nsenter), so it
listens on the login node's address that the pods and the head both reach. SIGTERM stops it
cleanly: every pod process is stopped, the cloud hosts are deleted, the ready file is removed.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
from pathlib import Path
from types import FrameType

from . import cloudhosts, images
from .api import ApiServer
from .quantity import parse_quantity
from .runner import PodRunner
from .scheduler import HostShape
from .store import Store

log = logging.getLogger("kube_standin.server")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m kube_standin.server", description=__doc__)
    p.add_argument("--listen", default="10.77.0.1", help="address to bind (the login node's)")
    p.add_argument("--port", type=int, default=16443)
    p.add_argument("--token-file", type=Path, required=True, help="bearer token clients must send")
    p.add_argument("--state-dir", type=Path, required=True, help="pod logs, ready file, hosts file")
    p.add_argument("--hosts", type=int, default=2, help="number of cloud hosts")
    p.add_argument("--host-prefix", default="rsl-c", help="hosts are network namespaces PREFIX1..N")
    p.add_argument("--subnet", default="10.77.0", help="the login bridge's /24, first three octets")
    p.add_argument("--ip-base", type=int, default=100, help="host i gets SUBNET.(IP_BASE+i)")
    p.add_argument("--login-ns", default="rsl-login", help="namespace holding the bridge")
    p.add_argument("--bridge", default="br0")
    p.add_argument("--host-cpus", default="2", help="CPU capacity of every host")
    p.add_argument("--host-memory", default="4Gi", help="memory capacity of every host")
    p.add_argument("--host-label", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--host-taint", action="append", default=[], metavar="KEY=VALUE:EFFECT")
    p.add_argument(
        "--image",
        action="append",
        default=[],
        metavar="PATTERN=ENV_DIR",
        help="image rule (repeatable; replaces the default: this env's Ray version tags)",
    )
    p.add_argument("--namespace", action="append", default=[], help="namespaces to create")
    p.add_argument("--quota-pods", type=int, help="ResourceQuota 'standin-quota': max pods")
    p.add_argument("--quota-cpu", help="ResourceQuota 'standin-quota': max requests.cpu")
    p.add_argument("--start-delay", type=float, default=1.0, help="seconds in ContainerCreating")
    p.add_argument("--tmp-root", type=Path, help="parent of pods' TMPDIRs (default /tmp/kst.PORT)")
    p.add_argument("-v", "--verbose", action="store_true")
    return p


def _taint(text: str) -> dict[str, str]:
    keyvalue, _, effect = text.rpartition(":")
    key, _, value = keyvalue.partition("=")
    if not key or effect not in ("NoSchedule", "PreferNoSchedule", "NoExecute"):
        raise ValueError(
            f"taint must be KEY[=VALUE]:NoSchedule|PreferNoSchedule|NoExecute: {text!r}"
        )
    return {"key": key, "value": value, "effect": effect}


def build(args: argparse.Namespace) -> tuple[Store, PodRunner, list[cloudhosts.CloudHost]]:
    """Everything but the network: the store, its quotas, the runner (not yet started)."""
    hosts = cloudhosts.plan_hosts(args.host_prefix, args.hosts, args.subnet, args.ip_base)
    shape = HostShape(
        cpu=parse_quantity(args.host_cpus),
        memory=parse_quantity(args.host_memory),
        labels=dict(label.split("=", 1) for label in args.host_label),
        taints=[_taint(t) for t in args.host_taint],
    )
    rules = [images.ImageRule.parse(r) for r in args.image] or images.default_rules(
        Path(sys.prefix)
    )
    store = Store(args.namespace or ["default"])
    if args.quota_pods is not None or args.quota_cpu is not None:
        hard = {}
        if args.quota_pods is not None:
            hard["pods"] = str(args.quota_pods)
        if args.quota_cpu is not None:
            hard["requests.cpu"] = str(args.quota_cpu)
        for ns in args.namespace or ["default"]:
            store.create(
                "resourcequotas",
                ns,
                {"metadata": {"name": "standin-quota"}, "spec": {"hard": hard}},
            )
    runner = PodRunner(
        store=store,
        hosts=hosts,
        shape=shape,
        image_rules=rules,
        state_dir=args.state_dir,
        tmp_root=args.tmp_root or Path(f"/tmp/kst.{args.port}"),
        start_delay=args.start_delay,
    )
    log.info("image rules: %s", [(r.pattern, str(r.env)) for r in rules])
    return store, runner, hosts


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    store, runner, hosts = build(args)
    token = args.token_file.read_text().strip()
    if not token:
        log.error("token file %s is empty", args.token_file)
        return 2
    args.state_dir.mkdir(parents=True, exist_ok=True)
    (args.state_dir / "hosts").write_text("".join(f"{h.name}\n" for h in hosts))
    ready = args.state_dir / "ready"
    ready.unlink(missing_ok=True)
    try:
        for host in hosts:
            cloudhosts.create(host, args.login_ns, args.bridge)
        httpd = ApiServer((args.listen, args.port), store, token, runner.read_log, runner.nodes)
    except (OSError, RuntimeError) as exc:
        log.error("cannot start: %s", exc)
        for host in hosts:
            cloudhosts.destroy(host.name)
        return 1
    runner.start()
    stop = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        log.info("signal %d: stopping", signum)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    serving = threading.Thread(
        target=httpd.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True
    )
    serving.start()
    url = f"http://{args.listen}:{args.port}"
    ready.write_text(json.dumps({"url": url, "hosts": [h.__dict__ for h in hosts]}) + "\n")
    log.info("serving %s with %d cloud hosts", url, len(hosts))
    while not stop.wait(1.0):
        pass
    ready.unlink(missing_ok=True)
    httpd.stopping.set()
    httpd.shutdown()
    runner.stop()
    for host in hosts:
        cloudhosts.destroy(host.name)
    httpd.server_close()
    log.info("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
