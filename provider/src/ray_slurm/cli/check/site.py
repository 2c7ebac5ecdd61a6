"""The site half of ``ray-slurm check``: partitions, node map, Ray environment, login node, state.

Each check adds a problem (what is wrong, how to fix it) to a Report, or records what passed.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import socket
import stat
import subprocess
from dataclasses import dataclass
from pathlib import Path

from ray_slurm.backends.nodestart import HEAD_PORTS
from ray_slurm.backends.slurm import ratelimit
from ray_slurm.backends.slurm.client import TESTED_RELEASES, Slurm, SlurmError
from ray_slurm.backends.slurm.formats import NodeMapError, load_node_map
from ray_slurm.backends.slurm.nodemap import NodeAddresses
from ray_slurm.backends.slurm.partitions import Partition
from ray_slurm.cli.check.report import Report
from ray_slurm.config import Settings
from ray_slurm.hooks import usertmp
from ray_slurm.host.net import PORT_RANGE, free_ports, is_local_address, listeners
from ray_slurm.host.private import UnsafePathError, check_ancestors, check_private_dir
from ray_slurm.host.state import ClusterDir

SHOW_NAMES = 8  # list at most this many node names in one line


@dataclass(frozen=True)
class SlurmType:
    """What a node type asks SLURM for (None where the config is too broken to tell)."""

    name: str
    partitions: tuple[str, ...]  # () = the site's default partition
    cpus: int | None = None
    memory_mb: int | None = None
    gpus: int = 0


@dataclass(frozen=True)
class Site:
    """The provider settings the site checks need, from Settings or (broken config) raw YAML."""

    cluster_name: str
    head_mode: str
    head_ip: str
    state_dir: str
    ray_env: str
    node_map: str
    slurm_bin: str
    temp_root: str
    slurm_timeout_s: float
    types: tuple[SlurmType, ...]

    @classmethod
    def from_settings(cls, s: Settings) -> Site:
        """A type with problems is checked for its partition only (``NodeTypeSpec.complete``)."""
        types = tuple(
            SlurmType(t.name, _split(t.slurm.get("partition")), t.cpus, t.memory_mb, t.gpus)
            if t.complete else SlurmType(t.name, _split(t.slurm.get("partition")))
            for t in s.node_types.values()
            if t.batch
        )  # fmt: skip
        return cls(s.cluster_name, s.head_mode, s.head_ip, s.state_dir, s.ray_env, s.node_map,
                   s.slurm_bin, s.temp_root, s.slurm_timeout_s, types)  # fmt: skip


def _split(partition: str | None) -> tuple[str, ...]:
    """``--partition`` may list several (``a,b``): SLURM uses the first that can run the job."""
    return tuple(p for p in (partition or "").split(",") if p)


def _names(names: list[str]) -> str:
    shown = ", ".join(names[:SHOW_NAMES])
    return shown + (f" and {len(names) - SHOW_NAMES} more" if len(names) > SHOW_NAMES else "")


def check_slurm(site: Site, slurm: Slurm, report: Report) -> None:
    try:
        partitions = slurm.partitions()
        nodes = slurm.nodes()
        version = slurm.version()
    except SlurmError as exc:
        report.add(
            f"SLURM does not answer: {exc}",
            "run this on a login node of the site (SLURM_CONF, provider.slurm_bin)",
        )
        return
    major, minor, patch = version
    release = f"{major}.{minor:02d}.{patch}" if any(version) else "(release unknown)"
    tested = release.rsplit(".", 1)[0] in TESTED_RELEASES
    notes = [] if tested else [f"tested on {', '.join(TESTED_RELEASES)}: see the admin guide"]
    if ratelimit.verbose(version):  # how the provider sees slurmctld's rate limiter
        notes.append("rate limiter watched with squeue -v")
    report.passed.append(f"SLURM {release}" + (f" ({'; '.join(notes)})" if notes else ""))
    used = sorted({p for t in site.types for p in t.partitions})
    ok = all([_check_type(t, partitions, report) for t in site.types])  # report every type
    if ok:
        report.passed.append("partitions " + (", ".join(used) or "(site default)"))
    _check_node_map(site, sorted(nodes), report)


def _check_type(t: SlurmType, partitions: dict[str, Partition], report: Report) -> bool:
    where = f"available_node_types.{t.name}.node_config.partition"
    names = t.partitions
    if not names:
        default = [p.name for p in partitions.values() if p.default]
        if not default:
            report.add(
                f"{where}: not set, and the site has no default partition",
                f"set it to one of {_names(sorted(partitions))}",
            )
            return False
        names = tuple(default)
    up = sorted(partitions)
    ok = True
    for name in names:
        part = partitions.get(name)
        if part is None:
            report.add(
                f"{where}: partition {name!r} does not exist on this site",
                f"use one of {_names(up)} (sinfo -s)",
            )
            ok = False
        elif part.available != "up":
            report.add(
                f"{where}: partition {name!r} is {part.available.upper()} "
                "(jobs would wait with reason PartitionDown or Partition_Inactive)",
                "use a partition that is up, or ask the site to bring it up",
            )
            ok = False
        elif too_small := _too_small(t, name, part):
            report.add(too_small, "lower node_config cpus/memory/gpus or use another partition")
            ok = False
    return ok


def _too_small(t: SlurmType, name: str, part: Partition) -> str | None:
    """Why no usable node of the partition can ever hold one job of this type, if none can."""
    if t.cpus is None or t.memory_mb is None or part.fits(t.cpus, t.memory_mb, t.gpus):
        return None
    largest = max(part.shapes, key=lambda s: (s.usable, s.cpus, s.memory_mb))
    gpus = f", {t.gpus} GPUs" if t.gpus else ""
    has_gpus = f", {largest.gpus} GPUs" if t.gpus else ""
    usable = "" if largest.usable else " (and none is usable: down or drained)"
    return (
        f"available_node_types.{t.name}: asks for {t.cpus} CPUs, {t.memory_mb} MB{gpus} on one "
        f"node, but the largest node in partition {name!r} has {largest.cpus} CPUs, "
        f"{largest.memory_mb} MB{has_gpus}{usable}"
    )


def _check_node_map(site: Site, slurm_nodes: list[str], report: Report) -> None:
    if not site.node_map:
        report.passed.append("node addresses (SLURM's NodeAddr)")
        return
    try:
        mapped = load_node_map(site.node_map)
    except NodeMapError:
        return  # already reported by the config check
    missing = [n for n in slurm_nodes if n not in mapped]
    if missing:
        report.add(
            f"provider.node_map: {site.node_map} has no address for SLURM node(s) "
            f"{_names(missing)}: a worker placed there cannot start",
            "add them (the rayhpc.slurm.node_map module writes the map from SLURM)",
        )
    else:
        report.passed.append(f"node map ({len(mapped)} nodes)")


RAY_ENV_VERSIONS = """
import importlib.metadata as m, json
found = {}
for dist in ("ray", "ray-slurm"):
    try:
        found[dist] = m.version(dist)
    except m.PackageNotFoundError:
        found[dist] = None
print(json.dumps(found))
"""


def check_ray_env(site: Site, report: Report) -> None:
    bin_dir = Path(site.ray_env) / "bin"
    where = f"provider.ray_env: {site.ray_env}"
    missing = [n for n in ("ray", "ray-slurm", "python") if not os.access(bin_dir / n, os.X_OK)]
    if missing:
        report.add(
            f"{where} has no executable bin/{', bin/'.join(missing)}",
            "point ray_env at a Python environment with ray and ray_slurm installed "
            "on the shared filesystem (pip install ray-slurm)",
        )
        if "python" in missing:
            return
    try:
        proc = subprocess.run(
            [str(bin_dir / "python"), "-c", RAY_ENV_VERSIONS],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        theirs = json.loads(proc.stdout)
    except (subprocess.SubprocessError, OSError, ValueError) as exc:
        report.add(f"{where}: cannot tell its versions ({exc})", "check that its bin/python runs")
        return
    ok = True
    for dist in ("ray", "ray-slurm"):
        mine = importlib.metadata.version(dist)
        if theirs.get(dist) != mine:
            has = theirs.get(dist) or "not installed"
            report.add(
                f"{where} has {dist} {has}, this {dist} is {mine}: the head and the "
                "workers must run the same version as `ray up`",
                f"install {dist}=={mine} there, or point ray_env at the environment "
                "running this command",
            )
            ok = False
    if ok and not missing:
        report.passed.append(f"Ray env {site.ray_env} (ray {theirs['ray']})")


def check_login_head(site: Site, slurm: Slurm, report: Report) -> None:
    """Login mode: the head runs on this host, so its address, temp dir and ports are here."""
    if site.head_mode != "login":
        return
    ip = site.head_ip
    if ip:
        if not is_local_address(ip):
            report.add(
                f"provider.head_ip: {ip} is not an address of this host "
                f"({socket.gethostname()}), where the login-mode head runs",
                "use this login node's address on the compute nodes' network "
                "(ip -brief addr), or leave head_ip out to detect it",
            )
            return
    else:
        try:
            ip = NodeAddresses(slurm).login_ip()
        except (SlurmError, StopIteration, OSError) as exc:
            report.add(
                f"provider.head_ip: not set and cannot be detected ({exc})",
                "set provider.head_ip to this login node's address",
            )
            return
    report.passed.append(f"head address {ip}")
    temp = Path(site.temp_root)
    if not temp.is_dir() or not os.access(temp, os.W_OK | os.X_OK):
        report.add(
            f"provider.temp_root: {temp} is not a writable directory on this host",
            "use a short node-local directory that exists everywhere, such as /tmp",
        )
    else:
        try:  # each node's directory is made in it: nobody else may be able to swap that
            check_ancestors(temp / "node-dir")
        except UnsafePathError as exc:
            report.add(f"provider.temp_root: {exc.path} {exc.why}",
                       "use a directory only root controls, sticky if every account may "
                       "write to it (as /tmp is)")  # fmt: skip
    try:
        free_ports(HEAD_PORTS, str(ClusterDir(site.state_dir, site.cluster_name).root))
    except RuntimeError as exc:
        low, high = PORT_RANGE
        held = listeners(range(low, high))
        mine = sum(1 for uids in held.values() if os.geteuid() in uids)
        others = sorted({u for uids in held.values() for u in uids} - {os.geteuid()})
        fix = "stop stale Ray processes of yours (ray-slurm status, then ray down)" if mine else ""
        if others:
            fix = (fix + "; " if fix else "") + (
                f"other accounts (uids {', '.join(map(str, others))}) hold ports there: ask the "
                "site's admins")  # fmt: skip
        report.add(f"ports for the head: {exc} on this host ({mine} held by you)",
                   fix or "free ports in that range")  # fmt: skip


def check_state(site: Site, report: Report) -> None:
    """The cluster's directory, its token and the private temp root: the provider's own checks
    (``private``), so `ray-slurm check` refuses exactly what `ray up` would."""
    cluster = ClusterDir(site.state_dir, site.cluster_name)
    where = "provider.state_dir"
    try:
        if cluster.root.exists():
            check_private_dir(cluster.root)
        else:
            parent = next((p for p in cluster.root.parents if p.exists()), Path("/"))
            if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
                report.add(
                    f"{where}: {cluster.root} does not exist and cannot be created "
                    f"({parent} is not a writable directory)",
                    "use a state_dir in your home or project directory",
                )
                return
            check_ancestors(cluster.root)
    except UnsafePathError as exc:
        report.add(f"{where}: {exc.path} {exc.why}",
                   f"remove {exc.path} if it is not yours, else chmod 700 it; or use another "
                   "state_dir")  # fmt: skip
        return
    if cluster.token_file.exists():
        info = cluster.token_file.stat()
        mode = stat.S_IMODE(info.st_mode)
        if info.st_uid != os.geteuid() or mode & 0o077:
            report.add(
                f"token file {cluster.token_file} has mode {mode:04o}, owner uid {info.st_uid}",
                f"chmod 600 {cluster.token_file} (the token admits to the cluster)",
            )
            return
    try:
        usertmp.require()
    except UnsafePathError as exc:
        report.add(f"private temp root {exc.path} {exc.why}",
                   "ask the admins to remove it (another account made it), or set TMPDIR to "
                   "a directory of your own")  # fmt: skip
        return
    report.passed.append(f"state dir {cluster.root}")
