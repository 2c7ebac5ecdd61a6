"""The layout of one local site (scripts/sites/NAME.yaml) read, checked and turned into what
scripts/localsite needs: shell variables, slurm.conf and gres.conf.

One reader for the format, so a bad layout is refused once, naming the bad value, before any
namespace or daemon exists. The format is documented in scripts/README-localsite.md.

    localsite_layout.py shell FILE            # NAME=value lines for bash's eval
    localsite_layout.py slurm-conf FILE DIR   # slurm.conf of the site whose state dir is DIR
    localsite_layout.py gres-conf FILE DIR    # gres.conf: GPUs on placeholder devices in DIR/dev
    localsite_layout.py slurmdbd-conf FILE DIR  # slurmdbd.conf ($RSL_DB_PASSWORD: MariaDB's)
    localsite_layout.py accounting FILE       # runs sacctmgr: the cluster, QOS, accounts, users
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

NAME_RE = re.compile(r"^[a-z][a-z0-9-]{0,19}$")  # site name, SLURM ClusterName
SHORT_RE = re.compile(r"^[a-z][a-z0-9]{0,7}$")  # a namespace prefix, a node group, a login host
PART_RE = re.compile(r"^[a-z][a-z0-9_]{0,19}$")
TIME_RE = re.compile(r"^(INFINITE|(\d+-)?\d{1,2}(:\d{2}){0,2})$")
FIRST_NODE = 11  # compute nodes' last octet starts here; .1 is the login node
KEYS = {"name", "prefix", "subnet", "login", "state_dir", "inventory", "munge", "node_groups",
        "partitions", "accounting", "os", "rate_limit", "preempt_signal"}  # fmt: skip
OPTIONAL = {"accounting", "os", "rate_limit", "preempt_signal"}
# The OS a site runs: the host's (Debian 12, Slurm 22.05) or a root filesystem that
# scripts/rootfs makes (Debian 13: Slurm 24.11, Python 3.13).
OSES = ("debian12", "debian13")
HOST_OS = "debian12"
GROUP_KEYS = {"name", "count", "cpus", "memory_mb", "gpus", "features"}
PART_KEYS = {"name", "nodes", "default", "max_time", "max_nodes", "priority_tier",
             "grace_time_s"}  # fmt: skip
ACCOUNTING_KEYS = {"qos", "accounts"}
QOS_KEYS = {"name", "max_submit_jobs_per_user", "grp_tres"}
ACCOUNT_KEYS = {"name", "users", "qos"}
USER_RE = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")
TRES_RE = re.compile(r"^(cpu|mem|node|gres/gpu)=\d+[MG]?(,(cpu|mem|node|gres/gpu)=\d+[MG]?)*$")
DBD_PORT = 6819


class LayoutError(Exception):
    """A layout value that cannot be used; the message names it and says what would do."""


@dataclass
class Node:
    name: str
    addr: str
    group: str
    cpus: int
    memory_mb: int
    gpus: int
    features: list[str]


@dataclass
class Partition:
    name: str
    groups: list[str]
    default: bool = False
    max_time: str = "INFINITE"
    max_nodes: int = 0
    priority_tier: int = 1
    grace_time_s: int = 0  # how long a preempted job of this partition has before SIGKILL


@dataclass
class Qos:
    name: str
    max_submit_jobs_per_user: int = 0
    grp_tres: str = ""


@dataclass
class Account:
    name: str
    users: list[str]
    qos: list[str]


@dataclass
class Accounting:
    """SLURM accounting: slurmdbd with MariaDB, AccountingStorageEnforce, these QOS/accounts."""

    qos: list[Qos]
    accounts: list[Account]


@dataclass
class Layout:
    name: str
    prefix: str
    subnet: str
    login: str
    state_dir: str
    inventory: str
    munge: str
    os: str = HOST_OS
    rate_limit: bool = False  # slurmctld's per-user RPC rate limiter, with SLURM's defaults
    preempt_signal: bool = False  # PreemptParameters=send_user_signal: the job's --signal
    nodes: list[Node] = field(default_factory=list)
    partitions: list[Partition] = field(default_factory=list)
    accounting: Accounting | None = None


def _want(value: Any, kind: type, where: str, what: str) -> Any:
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise LayoutError(f"{where}: {value!r} is not {what}")
    return value


def _match(value: Any, pattern: re.Pattern[str], where: str, what: str) -> str:
    if not isinstance(value, str) or not pattern.match(value):
        raise LayoutError(f"{where}: {value!r} is not {what}")
    return value


def _count(value: Any, where: str, low: int, high: int) -> int:
    _want(value, int, where, f"a whole number {low}..{high}")
    if not low <= value <= high:
        raise LayoutError(f"{where}: {value!r} is not a whole number {low}..{high}")
    return int(value)


def _unknown(raw: dict[str, Any], known: set[str], where: str) -> None:
    extra = sorted(set(raw) - known)
    if extra:
        raise LayoutError(f"{where}: unknown key {extra[0]!r} (known: {', '.join(sorted(known))})")


def parse(raw: Any, source: str) -> Layout:
    """The layout in ``raw`` (a YAML mapping), or LayoutError naming the first bad value."""
    _want(raw, dict, source, "a mapping")
    _unknown(raw, KEYS, source)
    missing = sorted(k for k in KEYS - OPTIONAL if k not in raw)
    if missing:
        raise LayoutError(f"{source}: {missing[0]!r} is missing")
    subnet = _want(raw["subnet"], str, f"{source}: subnet", "a /24 as its first three octets")
    try:
        net = ipaddress.IPv4Network(f"{subnet}.0/24")
    except ValueError:
        raise LayoutError(f"{source}: subnet: {subnet!r} is not a /24 as its first three "
                          "octets (e.g. 10.77.0)") from None  # fmt: skip
    if not net.is_private:
        raise LayoutError(f"{source}: subnet: {subnet!r} is not a private network")
    munge = raw["munge"]
    if munge not in ("host", "own"):
        raise LayoutError(f"{source}: munge: {munge!r} is not 'host' or 'own'")
    layout = Layout(
        name=_match(raw["name"], NAME_RE, f"{source}: name", "a name (a-z, 0-9, -; ≤ 20)"),
        prefix=_match(raw["prefix"], SHORT_RE, f"{source}: prefix", "a short name (a-z0-9, ≤ 8)"),
        subnet=subnet,
        login=_match(raw["login"], SHORT_RE, f"{source}: login", "a short host name (≤ 8)"),
        state_dir=_want(raw["state_dir"], str, f"{source}: state_dir", "a path"),
        inventory=_want(raw["inventory"], str, f"{source}: inventory", "a path"),
        munge=munge,
        os=raw.get("os", HOST_OS),
        rate_limit=_want(raw.get("rate_limit", False), bool, f"{source}: rate_limit",
                         "true or false"),
        preempt_signal=_want(raw.get("preempt_signal", False), bool,
                             f"{source}: preempt_signal", "true or false"),
    )  # fmt: skip
    if layout.os not in OSES:
        raise LayoutError(f"{source}: os: {layout.os!r} is not one of {', '.join(OSES)}")
    if layout.os != HOST_OS and munge != "own":
        raise LayoutError(f"{source}: munge: {munge!r}: a site on {layout.os} runs in a root "
                          "filesystem of its own, with a munged of its own: use 'own'")  # fmt: skip
    if not layout.state_dir.startswith("/"):
        raise LayoutError(f"{source}: state_dir: {layout.state_dir!r} is not an absolute path")
    _nodes(layout, _want(raw["node_groups"], list, f"{source}: node_groups", "a list"), source)
    _partitions(layout, _want(raw["partitions"], list, f"{source}: partitions", "a list"), source)
    if "accounting" in raw:
        layout.accounting = _accounting(raw["accounting"], f"{source}: accounting")
    return layout


def _accounting(raw: Any, where: str) -> Accounting:
    _want(raw, dict, where, "a mapping")
    _unknown(raw, ACCOUNTING_KEYS, where)
    qos: list[Qos] = []
    for i, q in enumerate(_want(raw.get("qos", []), list, f"{where}.qos", "a list")):
        at = f"{where}.qos[{i}]"
        _want(q, dict, at, "a mapping")
        _unknown(q, QOS_KEYS, at)
        qos.append(Qos(
            name=_match(q.get("name"), PART_RE, f"{at}.name", "a QOS name (a-z0-9_)"),
            max_submit_jobs_per_user=_count(q.get("max_submit_jobs_per_user", 0),
                                            f"{at}.max_submit_jobs_per_user", 0, 100000),
            grp_tres=_match(q.get("grp_tres", ""), TRES_RE, f"{at}.grp_tres",
                            "TRES limits such as cpu=2,mem=4000M") if "grp_tres" in q else "",
        ))  # fmt: skip
    known_qos = {"normal"} | {q.name for q in qos}
    accounts: list[Account] = []
    for i, a in enumerate(_want(raw.get("accounts"), list, f"{where}.accounts", "a list")):
        at = f"{where}.accounts[{i}]"
        _want(a, dict, at, "a mapping")
        _unknown(a, ACCOUNT_KEYS, at)
        users = _want(a.get("users"), list, f"{at}.users", "a list of user names")
        for user in users:
            _match(user, USER_RE, f"{at}.users", "a user name")
        allowed = _want(a.get("qos", ["normal"]), list, f"{at}.qos", "a list of QOS names")
        for name in allowed:
            if name not in known_qos:
                raise LayoutError(f"{at}.qos: {name!r} is not a QOS of the layout "
                                  f"(known: {', '.join(sorted(known_qos))})")  # fmt: skip
        accounts.append(Account(
            name=_match(a.get("name"), PART_RE, f"{at}.name", "an account name (a-z0-9_)"),
            users=users, qos=allowed,
        ))  # fmt: skip
    if not accounts:
        raise LayoutError(f"{where}.accounts: accounting needs at least one account")
    return Accounting(qos=qos, accounts=accounts)


def _nodes(layout: Layout, groups: list[Any], source: str) -> None:
    seen: set[str] = set()
    for i, raw in enumerate(groups):
        where = f"{source}: node_groups[{i}]"
        _want(raw, dict, where, "a mapping")
        _unknown(raw, GROUP_KEYS, where)
        name = _match(raw.get("name"), SHORT_RE, f"{where}.name", "a short name (a-z0-9, ≤ 8)")
        if name in seen:
            raise LayoutError(f"{where}.name: {name!r} is used twice")
        seen.add(name)
        features = _want(raw.get("features", []), list, f"{where}.features", "a list of words")
        for feature in features:
            _match(feature, PART_RE, f"{where}.features", "a word (a-z, 0-9, _)")
        for n in range(1, _count(raw.get("count"), f"{where}.count", 1, 89) + 1):
            last = FIRST_NODE + len(layout.nodes)
            if last > 99:
                raise LayoutError(f"{where}.count: more than {99 - FIRST_NODE + 1} nodes in all")
            layout.nodes.append(Node(
                name=f"{name}{n}", addr=f"{layout.subnet}.{last}", group=name,
                cpus=_count(raw.get("cpus"), f"{where}.cpus", 1, 256),
                memory_mb=_count(raw.get("memory_mb"), f"{where}.memory_mb", 100, 4_000_000),
                gpus=_count(raw.get("gpus", 0), f"{where}.gpus", 0, 16), features=features,
            ))  # fmt: skip
    if not layout.nodes:
        raise LayoutError(f"{source}: node_groups: the site has no node")


def _partitions(layout: Layout, parts: list[Any], source: str) -> None:
    groups = {n.group for n in layout.nodes}
    for i, raw in enumerate(parts):
        where = f"{source}: partitions[{i}]"
        _want(raw, dict, where, "a mapping")
        _unknown(raw, PART_KEYS, where)
        name = _match(raw.get("name"), PART_RE, f"{where}.name", "a partition name (a-z0-9_)")
        if any(p.name == name for p in layout.partitions):
            raise LayoutError(f"{where}.name: {name!r} is used twice")
        nodes = _want(raw.get("nodes", sorted(groups)), list, f"{where}.nodes", "a list")
        for group in nodes:
            if group not in groups:
                raise LayoutError(f"{where}.nodes: {group!r} is not a node group "
                                  f"(the groups: {', '.join(sorted(groups))})")  # fmt: skip
        layout.partitions.append(Partition(
            name=name, groups=nodes,
            default=_want(raw.get("default", False), bool, f"{where}.default", "true or false"),
            max_time=_match(raw.get("max_time", "INFINITE"), TIME_RE, f"{where}.max_time",
                            "a SLURM time (INFINITE, D-HH:MM:SS, HH:MM:SS, MM)"),
            max_nodes=_count(raw.get("max_nodes", 0), f"{where}.max_nodes", 0, 1000),
            priority_tier=_count(raw.get("priority_tier", 1), f"{where}.priority_tier", 0, 65533),
            grace_time_s=_count(raw.get("grace_time_s", 0), f"{where}.grace_time_s", 0, 3600),
        ))  # fmt: skip
    if sum(p.default for p in layout.partitions) != 1:
        raise LayoutError(f"{source}: partitions: exactly one must be default: true")


def load(path: Path) -> Layout:
    try:
        raw = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise LayoutError(f"{path}: cannot read: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise LayoutError(f"{path}: not YAML: {exc}") from None
    return parse(raw, str(path))


def shell(layout: Layout) -> str:
    """Variables for localsite; arrays list the compute nodes in order."""
    q = shlex.quote
    values = {"SITE_NAME": layout.name, "RSL_PREFIX": layout.prefix, "SUBNET": layout.subnet,
              "LOGIN_HOST": layout.login, "LAYOUT_STATE": layout.state_dir,
              "LAYOUT_INVENTORY": layout.inventory, "MUNGE_MODE": layout.munge,
              "SITE_OS": "" if layout.os == HOST_OS else layout.os,
              "ACCOUNTING": "yes" if layout.accounting else "no",
              "GPUS_MAX": str(max(n.gpus for n in layout.nodes))}  # fmt: skip
    lines = [f"{k}={q(v)}" for k, v in values.items()]
    lines.append(f"NODES=({' '.join(q(n.name) for n in layout.nodes)})")
    lines.append(f"NODE_ADDRS=({' '.join(q(n.addr) for n in layout.nodes)})")
    return "\n".join(lines) + "\n"


def slurm_conf(layout: Layout, state: str) -> str:
    """The site's slurm.conf: the settings every localsite shares, then its nodes and partitions."""
    munge_socket = f"{state}/munge/munge.socket"
    text = (Path(__file__).parent / "sites" / "slurm-common.conf").read_text()
    text = text.replace("@CLUSTER@", layout.name).replace("@STATE@", state)
    lines = [text.replace("@CTLD@", f"{layout.login}({layout.subnet}.1)").rstrip("\n")]
    if layout.munge == "own":
        lines.append(f"AuthInfo=socket={munge_socket}")
    if layout.rate_limit:  # SLURM's defaults: a bucket of 30 RPCs, refilled at 2 a second
        lines.append("SlurmctldParameters=rl_enable")
    if layout.preempt_signal:  # a preempted job gets its own --signal, then GraceTime to leave
        lines.append("PreemptParameters=send_user_signal")
    if layout.accounting:
        lines += ["AccountingStorageType=accounting_storage/slurmdbd",
                  f"AccountingStorageHost={layout.subnet}.1", f"AccountingStoragePort={DBD_PORT}",
                  "AccountingStorageEnforce=associations,limits,qos"]  # fmt: skip
        if layout.munge == "own":  # 24.11's clients sign for slurmdbd with this munged only
            lines.append(f"AccountingStoragePass={munge_socket}")
    else:
        lines.append("AccountingStorageType=accounting_storage/none")
    if any(n.gpus for n in layout.nodes):
        lines.append("GresTypes=gpu")
    for n in layout.nodes:
        extra = f" Gres=gpu:{n.gpus}" if n.gpus else ""
        extra += f" Features={','.join(n.features)}" if n.features else ""
        lines.append(f"NodeName={n.name} NodeAddr={n.addr} NodeHostname={n.name} CPUs={n.cpus} "
                     f"RealMemory={n.memory_mb}{extra} State=UNKNOWN")  # fmt: skip
    for p in layout.partitions:
        nodes = ",".join(n.name for n in layout.nodes if n.group in p.groups)
        extra = " Default=YES" if p.default else ""
        extra += f" MaxNodes={p.max_nodes}" if p.max_nodes else ""
        extra += f" GraceTime={p.grace_time_s}" if p.grace_time_s else ""
        lines.append(f"PartitionName={p.name} Nodes={nodes} MaxTime={p.max_time} "
                     f"PriorityTier={p.priority_tier}{extra} State=UP")  # fmt: skip
    return "\n".join(lines) + "\n"


def gres_conf(layout: Layout, state: str) -> str:
    """GPUs on placeholder devices: slurmd 22.05 drops a GPU without ``File=`` from the node's
    GRES ("Removing file-less GPU"), so each is a character device like /dev/null that localsite
    makes in ``<state>/dev`` (``gpu0``...): SLURM counts, allocates and binds them; no GPU."""
    lines = ["# Generated by scripts/localsite: GPUs on placeholder devices (no real GPU)."]
    lines += [f"NodeName={n.name} Name=gpu File={state}/dev/gpu[0-{n.gpus - 1}]"
              for n in layout.nodes if n.gpus]  # fmt: skip
    return "\n".join(lines) + "\n"


def slurmdbd_conf(layout: Layout, state: str, password: str) -> str:
    """slurmdbd.conf: slurmdbd on the login node, MariaDB on its loopback (TCP, port 3306)."""
    lines = ["# Generated by scripts/localsite: the accounting of this site.",
             "AuthType=auth/munge", f"DbdHost={layout.login}", f"DbdAddr={layout.subnet}.1",
             f"DbdPort={DBD_PORT}", "SlurmUser=root", "StorageType=accounting_storage/mysql",
             "StorageHost=127.0.0.1", "StoragePort=3306", "StorageUser=slurm",
             f"StoragePass={password}", "StorageLoc=slurm_acct_db",
             f"PidFile={state}/run/slurmdbd.pid", f"LogFile={state}/log/slurmdbd.log",
             "DebugLevel=info"]  # fmt: skip
    if layout.munge == "own":
        lines.insert(2, f"AuthInfo=socket={state}/munge/munge.socket")
    return "\n".join(lines) + "\n"


def sacctmgr_commands(layout: Layout) -> list[list[str]]:
    """The associations and limits of the layout, as ``sacctmgr -i`` argv lists, in order."""
    acct = layout.accounting
    assert acct is not None
    cmds = [["add", "cluster", layout.name]]
    for q in acct.qos:
        limits = (
            [f"MaxSubmitJobsPerUser={q.max_submit_jobs_per_user}"]
            if q.max_submit_jobs_per_user
            else []
        )
        limits += [f"GrpTRES={q.grp_tres}"] if q.grp_tres else []
        cmds.append(["add", "qos", q.name, *limits])
    for a in acct.accounts:
        cmds.append(["add", "account", a.name, f"Cluster={layout.name}"])
        qos = f"QOS={','.join(a.qos)}"
        cmds.append(["add", "user", ",".join(a.users), f"Account={a.name}",
                     f"Cluster={layout.name}", qos, "DefaultQOS=normal"])  # fmt: skip
    return [["sacctmgr", "-i", *c] for c in cmds]


def apply_accounting(layout: Layout) -> int:
    """Run the sacctmgr commands (on the login node, SLURM_CONF set); the first failure stops."""
    for argv in sacctmgr_commands(layout):
        proc = subprocess.run(argv, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            sys.stderr.write(f"localsite: {' '.join(argv)} failed: {proc.stdout}{proc.stderr}")
            return 1
    return 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("what", choices=["shell", "slurm-conf", "gres-conf", "slurmdbd-conf",
                                    "accounting"])  # fmt: skip
    p.add_argument("layout", type=Path)
    p.add_argument("state_dir", nargs="?")
    args = p.parse_args()
    try:
        layout = load(args.layout)
    except LayoutError as exc:
        print(f"localsite: bad layout: {exc}", file=sys.stderr)
        return 2
    if args.what == "shell":
        sys.stdout.write(shell(layout))
    elif args.what == "slurmdbd-conf":
        password = os.environ.get("RSL_DB_PASSWORD", "")
        if not password:
            print("localsite: slurmdbd-conf needs RSL_DB_PASSWORD", file=sys.stderr)
            return 2
        sys.stdout.write(slurmdbd_conf(layout, args.state_dir or layout.state_dir, password))
    elif args.what == "accounting":
        if layout.accounting is None:
            return 0
        return apply_accounting(layout)
    elif args.what == "slurm-conf":
        sys.stdout.write(slurm_conf(layout, args.state_dir or layout.state_dir))
    else:
        sys.stdout.write(gres_conf(layout, args.state_dir or layout.state_dir))
    return 0


if __name__ == "__main__":
    sys.exit(main())
