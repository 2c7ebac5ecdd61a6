# Copyright (c) 2026, rayhpc.slurm developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""SLURM nodes for the rayhpc.slurm modules: parse ``scontrol show node -o``, run it, and
validate a node name -> IP mapping against it.

Everything but ``scontrol_show_nodes`` is pure (the resolver is a parameter), so it is tested
without SLURM or DNS.
"""

from __future__ import annotations

import ipaddress
import os
import re
import socket
from dataclasses import dataclass

# One ``Key=value`` field of an ``scontrol -o`` line starts at a capitalised key after whitespace.
# Values may contain spaces (``OS=Linux 6.1.0 #1 SMP ...``, ``Reason=Not responding [root@...]``):
# a value runs up to the next key.
_KEY = re.compile(r"(?:^|(?<=\s))([A-Z][A-Za-z0-9_]*)=")
_NULL = ("", "(null)", "N/A")
_YAML_WORDS = {"y", "n", "yes", "no", "on", "off", "true", "false", "null", "~"}


class SlurmError(Exception):
    """scontrol could not be run or did not answer."""


@dataclass(frozen=True)
class SlurmNode:
    name: str
    addr: str
    hostname: str
    partitions: tuple[str, ...]
    state: str


def parse_scontrol_line(line: str) -> dict[str, str]:
    """``Key=value`` fields of one ``scontrol show ... -o`` line; the first of a repeated key wins
    (so free text in a late field such as ``Reason=`` cannot override ``NodeAddr=``)."""
    fields: dict[str, str] = {}
    matches = list(_KEY.finditer(line))
    for i, match in enumerate(matches):
        end = matches[i + 1].start() if i + 1 < len(matches) else len(line)
        fields.setdefault(match.group(1), line[match.end():end].strip())
    return fields


def parse_show_node(text: str) -> list[SlurmNode]:
    """The nodes in ``scontrol show node -o`` output (lines without ``NodeName=`` are skipped,
    e.g. ``No nodes in the system``)."""
    nodes = []
    for line in text.splitlines():
        fields = parse_scontrol_line(line)
        name = fields.get("NodeName", "")
        if not name:
            continue
        partitions = fields.get("Partitions", "")
        nodes.append(SlurmNode(
            name=name,
            addr=_value(fields.get("NodeAddr")) or name,
            hostname=_value(fields.get("NodeHostName")) or name,
            partitions=tuple(p for p in partitions.split(",") if p) if partitions not in _NULL else (),
            state=fields.get("State", ""),
        ))
    return nodes


def _value(value: str | None) -> str:
    return "" if value is None or value in _NULL else value


def scontrol_show_nodes(module, slurm_bin: str | None = None, slurm_conf: str | None = None) -> list[SlurmNode]:
    """Run ``scontrol show node -o`` through ``module.run_command``; raise SlurmError with a
    message a sysadmin can act on."""
    if slurm_bin:
        scontrol = os.path.join(slurm_bin, "scontrol")
        if not os.access(scontrol, os.X_OK):
            raise SlurmError("scontrol not found: %s is not an executable (check slurm_bin)" % scontrol)
    else:
        scontrol = module.get_bin_path("scontrol")
        if not scontrol:
            raise SlurmError("scontrol not found on PATH: install the SLURM client commands or set slurm_bin")
    environ = {}
    if slurm_conf:
        if not os.path.isfile(slurm_conf):
            raise SlurmError("slurm_conf %s does not exist" % slurm_conf)
        environ["SLURM_CONF"] = slurm_conf
    command = [scontrol, "show", "node", "-o"]
    rc, out, err = module.run_command(command, environ_update=environ)
    if rc != 0:
        raise SlurmError("`%s` failed (rc=%d): %s" % (" ".join(command), rc, (err or out).strip()))
    nodes = parse_show_node(out)
    if not nodes:
        raise SlurmError("`%s` reported no nodes: %s" % (" ".join(command), out.strip() or "(no output)"))
    return nodes


def canonical_ip(value: object) -> str | None:
    """The canonical text of an IP address (``ipaddress`` rules: no leading zeros), or None."""
    try:
        return str(ipaddress.ip_address(str(value).strip()))
    except ValueError:
        return None


def resolve_host(host: str) -> list[str]:
    """Addresses of a host name (or the IP itself), IPv4 first; [] if it does not resolve."""
    address = canonical_ip(host)
    if address:
        return [address]
    try:
        infos = socket.getaddrinfo(host, None, 0, socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        return []
    addresses: list[str] = []
    for info in infos:
        address = canonical_ip(str(info[4][0]).partition("%")[0])
        if address and address not in addresses:
            addresses.append(address)
    return sorted(addresses, key=lambda a: ":" in a)


def finding(name: object, value: object, problem: str, detail: str) -> dict[str, str]:
    return {"name": str(name), "value": str(value), "problem": problem, "detail": detail}


def format_findings(findings: list[dict[str, str]]) -> str:
    """One message naming every bad entry: ``'n2' = '10.0.0.1': <detail>; ...``."""
    count = len(findings)
    items = ["%r = %r: %s" % (f["name"], f["value"], f["detail"]) for f in findings]
    return "node map: %d problem%s: %s" % (count, "" if count == 1 else "s", "; ".join(items))


def entries_from_option(nodes: object) -> tuple[list[tuple[str, str]], list[dict[str, str]]]:
    """(name, ip) pairs from the ``nodes`` option: a dict name -> ip, or a list of
    ``{name, ip}`` dicts (which can hold the same name twice)."""
    if isinstance(nodes, dict):
        return [(str(name), "" if ip is None else str(ip)) for name, ip in nodes.items()], []
    if not isinstance(nodes, (list, tuple)):
        return [], [finding("nodes", nodes, "invalid_entry", "nodes must be a dict name: ip or a list of {name, ip}")]
    entries, findings = [], []
    for index, item in enumerate(nodes):
        if isinstance(item, dict) and set(item) == {"name", "ip"} and item["name"] is not None:
            entries.append((str(item["name"]), "" if item["ip"] is None else str(item["ip"])))
        else:
            findings.append(finding("nodes[%d]" % index, item, "invalid_entry",
                                    "expected a dict with exactly the keys name and ip"))
    return entries, findings


def nodes_in_scope(slurm_nodes: list[SlurmNode], partitions: list[str]) -> list[SlurmNode]:
    """SLURM's nodes in any of the partitions (all nodes if none are given)."""
    wanted = set(partitions)
    return [n for n in slurm_nodes if not wanted or wanted.intersection(n.partitions)]


def entries_from_slurm(slurm_nodes, partitions, resolver=resolve_host):
    """(name, ip) pairs from SLURM's NodeAddr (resolved if it is a host name)."""
    entries, findings = [], []
    for node in nodes_in_scope(slurm_nodes, partitions):
        addresses = resolver(node.addr)
        if addresses:
            entries.append((node.name, addresses[0]))
        else:
            findings.append(finding(node.name, node.addr, "slurm_unresolved",
                                    "SLURM's NodeAddr %s does not resolve" % node.addr))
    return entries, findings


@dataclass(frozen=True)
class _Entry:
    given_name: str
    given_ip: str
    name: str  # stripped
    address: str | None  # canonical, None if malformed


def natural_key(name: str) -> list:
    """Sort key putting n2 before n10."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def validate(entries, slurm_nodes=None, partitions=(), check_dns=False, resolver=resolve_host):
    """Check (name, ip) pairs; return (mapping name -> canonical ip, findings).

    Without ``slurm_nodes`` only the map itself is checked (IPs, duplicates, DNS)."""
    cache: dict[str, list[str]] = {}

    def resolve(host: str) -> list[str]:
        if host not in cache:
            cache[host] = resolver(host)
        return cache[host]

    findings = []
    checked: list[_Entry] = []
    for given_name, given_ip in entries:
        if not given_name.strip():
            findings.append(finding(given_name, given_ip, "invalid_entry", "empty node name"))
            continue
        entry = _Entry(given_name, given_ip, given_name.strip(), canonical_ip(given_ip))
        if entry.address is None:
            findings.append(finding(given_name, given_ip, "malformed_ip", "not an IP address"))
        checked.append(entry)

    spellings: dict[str, list[str]] = {}
    owners: dict[str, list[str]] = {}
    for entry in checked:
        spellings.setdefault(entry.name.casefold(), []).append(entry.given_name)
        if entry.address:
            owners.setdefault(entry.address, []).append(entry.name)
    for entry in checked:
        same = spellings[entry.name.casefold()]
        if len(same) > 1:
            findings.append(finding(entry.given_name, entry.given_ip, "duplicate_name",
                                    "node name given %d times (as %s)" % (len(same), ", ".join(repr(s) for s in same))))
        if entry.address and len(owners[entry.address]) > 1:
            others = [o for o in owners[entry.address] if o != entry.name] or [entry.name]
            findings.append(finding(entry.given_name, entry.given_ip, "duplicate_ip",
                                    "IP %s is also given for %s" % (entry.address, ", ".join(others))))

    if slurm_nodes is not None:
        by_name = {n.name: n for n in slurm_nodes}
        folded = {n.name.casefold(): n.name for n in slurm_nodes}
        known_partitions = {p for n in slurm_nodes for p in n.partitions}
        for partition in partitions:
            if partition not in known_partitions:
                findings.append(finding(partition, partition, "unknown_partition",
                                        "SLURM has no partition %s (it has %s)" % (partition, ", ".join(sorted(known_partitions)) or "none")))
        for entry in checked:
            node = by_name.get(entry.name)
            if node is None:
                hint = folded.get(entry.name.casefold())
                detail = "SLURM has no node %s" % entry.name
                if hint:
                    detail += " (node names are case-sensitive: SLURM has %s)" % hint
                findings.append(finding(entry.given_name, entry.given_ip, "unknown_node", detail))
                continue
            if entry.address is None:
                continue
            expected = resolve(node.addr)
            if not expected:
                findings.append(finding(entry.given_name, entry.given_ip, "slurm_unresolved",
                                        "SLURM's NodeAddr %s does not resolve" % node.addr))
            elif entry.address not in expected:
                shown = node.addr if [node.addr] == expected else "%s (%s)" % (node.addr, ", ".join(expected))
                findings.append(finding(entry.given_name, entry.given_ip, "slurm_mismatch", "SLURM's NodeAddr is %s" % shown))
        names = {entry.name for entry in checked}
        for node in nodes_in_scope(slurm_nodes, partitions):
            if node.name not in names:
                where = "partition(s) %s" % ",".join(node.partitions) if node.partitions else "no partition"
                findings.append(finding(node.name, node.addr, "missing_node",
                                        "SLURM node (in %s) missing from the map" % where))

    if check_dns:
        by_name = {n.name: n for n in slurm_nodes or []}
        for entry in checked:
            if entry.address is None:
                continue
            host = by_name[entry.name].hostname if entry.name in by_name else entry.name
            resolved = resolve(host)
            if not resolved:
                findings.append(finding(entry.given_name, entry.given_ip, "dns_unresolved", "host name %s does not resolve" % host))
            elif entry.address not in resolved:
                findings.append(finding(entry.given_name, entry.given_ip, "dns_mismatch",
                                        "DNS resolves %s to %s" % (host, ", ".join(resolved))))

    # One entry's findings together, in the order of the entries; then what the map lacks.
    order: dict[str, int] = {}
    for pair in entries:
        order.setdefault(pair[0], len(order))
    findings.sort(key=lambda f: order.get(f["name"], len(order)))

    mapping: dict[str, str] = {}
    for entry in checked:
        if entry.address and entry.name not in mapping:
            mapping[entry.name] = entry.address
    return {name: mapping[name] for name in sorted(mapping, key=natural_key)}, findings


def _yaml_scalar(text: str) -> str:
    """Plain YAML if it cannot be read as anything but this string, else a double-quoted one."""
    plain = re.match(r"^[A-Za-z][A-Za-z0-9._-]*$", text) or re.match(r"^\d+\.\d+\.\d+\.\d+$", text)
    if plain and text.lower() not in _YAML_WORDS:
        return text
    return '"%s"' % text.replace("\\", "\\\\").replace('"', '\\"')


def render_node_map(mapping: dict[str, str]) -> str:
    """The map file the ray_slurm provider reads: YAML ``name: ip``, one node a line, sorted."""
    lines = ["# SLURM node name -> IP address for Ray (written by rayhpc.slurm.node_map)"]
    lines.extend("%s: %s" % (_yaml_scalar(name), _yaml_scalar(mapping[name])) for name in sorted(mapping, key=natural_key))
    return "\n".join(lines) + "\n"
