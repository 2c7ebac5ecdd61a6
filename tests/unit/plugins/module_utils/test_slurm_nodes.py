# Copyright (c) 2026, rayhpc.slurm developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Parsing and validation in plugins/module_utils/slurm_nodes.py (pure: no SLURM, no DNS)."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
import yaml
from ansible_collections.rayhpc.slurm.plugins.module_utils import slurm_nodes as sn

FIXTURES = Path(__file__).parent.parent / "fixtures"
# Real `scontrol show node -o` output of the local site (scripts/localsite, SLURM 22.05.8).
LOCALSITE = (FIXTURES / "scontrol_show_node_localsite.txt").read_text()
# The same format for a site of another shape: a drained node whose Reason has spaces (and a
# NodeAddr= in its text), a NodeAddr that is a host name, a node in no partition.
HPC = (FIXTURES / "scontrol_show_node_hpc.txt").read_text()

SITE = sn.parse_show_node(LOCALSITE)
GOOD = [("n1", "10.77.0.11"), ("n2", "10.77.0.12"), ("n3", "10.77.0.13")]


def fake_resolver(table: dict[str, list[str]]):
    def resolve(host: str) -> list[str]:
        return [host] if sn.canonical_ip(host) else table.get(host, [])

    return resolve


def check(*args, **kwargs) -> list[dict[str, str]]:
    """The findings of validate()."""
    return sn.validate(*args, **kwargs)[1]


def problems(findings: list[dict[str, str]]) -> list[tuple[str, str]]:
    return sorted((f["name"], f["problem"]) for f in findings)


# --- parsing -------------------------------------------------------------------------------


def test_parse_localsite_output() -> None:
    assert [(n.name, n.addr, n.hostname, n.partitions) for n in SITE] == [
        ("n1", "10.77.0.11", "n1", ("debug", "long")),
        ("n2", "10.77.0.12", "n2", ("debug", "long")),
        ("n3", "10.77.0.13", "n3", ("debug", "long")),
    ]
    assert [n.state for n in SITE] == ["MIXED", "ALLOCATED", "ALLOCATED"]


def test_values_with_spaces_and_first_key_wins() -> None:
    fields = sn.parse_scontrol_line(HPC.splitlines()[1])
    assert fields["OS"] == "Linux 6.18.44-fc-v782 #1 SMP PREEMPT_DYNAMIC @0"
    assert fields["Reason"].startswith("disk replaced,")
    assert fields["NodeAddr"] == "10.20.0.2"  # not the NodeAddr= inside Reason's text
    assert fields["CfgTRES"] == "cpu=2,mem=4000M,billing=2"
    assert fields["AllocTRES"] == "cpu=2,mem=1500M"


def test_parse_other_site() -> None:
    nodes = {n.name: n for n in sn.parse_show_node(HPC)}
    assert nodes["gpu01"].addr == "gpu01-ib"
    assert nodes["gpu01"].partitions == ("gpu", "batch")
    assert nodes["spare01"].partitions == ()
    assert nodes["spare01"].state == "DOWN+NOT_RESPONDING"
    assert nodes["cpu02"].state == "IDLE+DRAIN"


def test_parse_empty_fields_and_no_nodes() -> None:
    line = "NodeName=x1 NodeAddr= NodeHostName=(null) Partitions=(null) State=FUTURE"
    (node,) = sn.parse_show_node(line)
    assert (node.addr, node.hostname, node.partitions) == ("x1", "x1", ())
    assert sn.parse_show_node("No nodes in the system\n") == []
    assert sn.parse_show_node("") == []


# --- running scontrol ----------------------------------------------------------------------


class FakeModule:
    def __init__(
        self,
        rc: int = 0,
        out: str = LOCALSITE,
        err: str = "",
        path: str | None = "/usr/bin/scontrol",
    ):
        self.result = (rc, out, err)
        self.path = path
        self.calls: list[tuple[list[str], dict[str, str]]] = []

    def get_bin_path(self, name: str) -> str | None:
        assert name == "scontrol"
        return self.path

    def run_command(self, args: list[str], environ_update: dict[str, str]):
        self.calls.append((args, environ_update))
        return self.result


def test_scontrol_runs_with_slurm_conf(tmp_path: Path) -> None:
    conf = tmp_path / "slurm.conf"
    conf.write_text("ClusterName=x\n")
    module = FakeModule()
    assert sn.scontrol_show_nodes(module, slurm_conf=str(conf)) == SITE
    assert module.calls == [
        (["/usr/bin/scontrol", "show", "node", "-o"], {"SLURM_CONF": str(conf)})
    ]


def test_scontrol_from_slurm_bin(tmp_path: Path) -> None:
    scontrol = tmp_path / "scontrol"
    scontrol.write_text("#!/bin/sh\n")
    scontrol.chmod(0o755)
    module = FakeModule(path=None)
    sn.scontrol_show_nodes(module, slurm_bin=str(tmp_path))
    assert module.calls[0][0][0] == str(scontrol)
    with pytest.raises(sn.SlurmError, match="not an executable.*slurm_bin"):
        sn.scontrol_show_nodes(module, slurm_bin=str(tmp_path / "nope"))


@pytest.mark.parametrize(
    ("module", "slurm_conf", "message"),
    [
        (FakeModule(path=None), None, "scontrol not found on PATH"),
        (
            FakeModule(),
            "/nonexistent/slurm.conf",
            "slurm_conf /nonexistent/slurm.conf does not exist",
        ),
        (
            FakeModule(
                rc=1,
                out="",
                err="slurm_load_node error: Unable to contact slurm controller (connect failure)\n",
            ),
            None,
            r"`/usr/bin/scontrol show node -o` failed \(rc=1\): slurm_load_node error: Unable",
        ),
        (
            FakeModule(out="No nodes in the system\n"),
            None,
            "reported no nodes: No nodes in the system",
        ),
    ],
)
def test_scontrol_errors(module: FakeModule, slurm_conf: str | None, message: str) -> None:
    with pytest.raises(sn.SlurmError, match=message):
        sn.scontrol_show_nodes(module, slurm_conf=slurm_conf)


# --- addresses -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("10.77.0.11", "10.77.0.11"),
        (" 10.77.0.11 ", "10.77.0.11"),
        ("fe80:0::1", "fe80::1"),
        ("010.77.0.11", None),
        ("10.77.0", None),
        ("10.77.0.256", None),
        ("n1", None),
        ("", None),
    ],
)
def test_canonical_ip(value: str, expected: str | None) -> None:
    assert sn.canonical_ip(value) == expected


def test_resolve_host(monkeypatch: pytest.MonkeyPatch) -> None:
    def getaddrinfo(host, *args):
        if host == "gpu01-ib":
            return [
                (socket.AF_INET6, socket.SOCK_STREAM, 6, "", ("fe80::1%eth0", 0, 0, 2)),
                (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("10.30.0.1", 0)),
                (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("10.30.0.1", 0)),
            ]
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    assert sn.resolve_host("gpu01-ib") == ["10.30.0.1", "fe80::1"]
    assert sn.resolve_host("nowhere") == []
    assert sn.resolve_host("10.77.0.11") == ["10.77.0.11"]


# --- the nodes option ----------------------------------------------------------------------


def test_entries_from_dict_and_list() -> None:
    assert sn.entries_from_option({"n1": "10.77.0.11", "n2": None}) == (
        [("n1", "10.77.0.11"), ("n2", "")],
        [],
    )
    entries, findings = sn.entries_from_option(
        [
            {"name": "n1", "ip": "10.77.0.11"},
            {"name": "n1 ", "ip": "10.77.0.12"},
            "n3=10.77.0.13",
            {"name": "n4"},
        ]
    )
    assert entries == [("n1", "10.77.0.11"), ("n1 ", "10.77.0.12")]
    assert problems(findings) == [("nodes[2]", "invalid_entry"), ("nodes[3]", "invalid_entry")]
    assert sn.entries_from_option("n1: 10.77.0.11")[1][0]["problem"] == "invalid_entry"


def test_entries_from_slurm_resolve_node_addr() -> None:
    nodes = sn.parse_show_node(HPC)
    resolver = fake_resolver({"gpu01-ib": ["10.30.0.1"]})
    assert sn.entries_from_slurm(nodes, ["gpu"], resolver) == ([("gpu01", "10.30.0.1")], [])
    entries, findings = sn.entries_from_slurm(nodes, [], fake_resolver({}))
    assert [entry[0] for entry in entries] == ["cpu01", "cpu02", "spare01"]
    assert problems(findings) == [("gpu01", "slurm_unresolved")]


# --- validation ----------------------------------------------------------------------------


def test_good_map_against_slurm() -> None:
    mapping, findings = sn.validate(list(reversed(GOOD)), SITE)
    assert findings == []
    assert list(mapping.items()) == GOOD  # sorted


def test_map_alone_is_normalised_and_naturally_sorted() -> None:
    entries = [("n10 ", "10.0.0.10"), (" n2", "10.0.0.2"), ("v6", "FE80:0:0::1")]
    mapping, findings = sn.validate(entries)
    assert findings == []
    assert list(mapping.items()) == [("n2", "10.0.0.2"), ("n10", "10.0.0.10"), ("v6", "fe80::1")]


def test_malformed_and_duplicate_ips() -> None:
    entries = [
        ("n1", "10.77.0.11"),
        ("n2", "10.77.0.11"),
        ("n3", "10.77.0.300"),
        ("n4", ""),
        ("n5", "010.77.0.11"),
    ]
    findings = check(entries)
    assert problems(findings) == [
        ("n1", "duplicate_ip"),
        ("n2", "duplicate_ip"),
        ("n3", "malformed_ip"),
        ("n4", "malformed_ip"),
        ("n5", "malformed_ip"),
    ]
    dup = next(f for f in findings if f["name"] == "n2")
    assert dup["detail"] == "IP 10.77.0.11 is also given for n1"


def test_duplicate_names_after_normalisation() -> None:
    entries = [
        ("n1", "10.77.0.11"),
        ("n1 ", "10.77.0.21"),
        ("N1", "10.77.0.31"),
        ("", "10.77.0.41"),
    ]
    findings = check(entries)
    assert problems(findings) == [
        ("", "invalid_entry"),
        ("N1", "duplicate_name"),
        ("n1", "duplicate_name"),
        ("n1 ", "duplicate_name"),
    ]
    assert "given 3 times (as 'n1', 'n1 ', 'N1')" in findings[1]["detail"]


def test_unknown_missing_and_mismatching_nodes() -> None:
    entries = [
        ("n1", "10.77.0.11"),
        ("n3", "10.77.0.99"),
        ("n9", "10.77.0.19"),
        ("N2", "10.77.0.12"),
    ]
    findings = check(entries, SITE)
    assert problems(findings) == [
        ("N2", "unknown_node"),
        ("n2", "missing_node"),
        ("n3", "slurm_mismatch"),
        ("n9", "unknown_node"),
    ]
    details = {f["name"]: f["detail"] for f in findings}
    assert details["n3"] == "SLURM's NodeAddr is 10.77.0.13"
    assert details["n9"] == "SLURM has no node n9"
    assert details["N2"] == "SLURM has no node N2 (node names are case-sensitive: SLURM has n2)"
    assert details["n2"] == "SLURM node (in partition(s) debug,long) missing from the map"


def test_partitions_limit_the_nodes_that_must_be_mapped() -> None:
    nodes = sn.parse_show_node(HPC)
    resolver = fake_resolver({"gpu01-ib": ["10.30.0.1"]})
    assert sn.validate([("gpu01", "10.30.0.1")], nodes, ["gpu"], resolver=resolver)[1] == []
    findings = check([("gpu01", "10.30.0.1")], nodes, ["batch", "fast"], resolver=resolver)
    assert problems(findings) == [
        ("cpu01", "missing_node"),
        ("cpu02", "missing_node"),
        ("fast", "unknown_partition"),
    ]
    # spare01 is in no partition: mapped or not, it is fine when partitions are given ...
    assert (
        sn.validate(
            [("gpu01", "10.30.0.1"), ("spare01", "10.20.0.9")], nodes, ["gpu"], resolver=resolver
        )[1]
        == []
    )
    # ... and must be mapped when they are not.
    findings = check([], nodes, [], resolver=resolver)
    assert ("spare01", "missing_node") in problems(findings)


def test_node_addr_host_name_is_resolved() -> None:
    nodes = sn.parse_show_node(HPC)
    good = sn.validate(
        [("gpu01", "10.30.0.1")],
        nodes,
        ["gpu"],
        resolver=fake_resolver({"gpu01-ib": ["10.30.0.1"]}),
    )
    assert good[1] == []
    findings = check(
        [("gpu01", "10.30.0.2")],
        nodes,
        ["gpu"],
        resolver=fake_resolver({"gpu01-ib": ["10.30.0.1"]}),
    )
    assert [(f["problem"], f["detail"]) for f in findings] == [
        ("slurm_mismatch", "SLURM's NodeAddr is gpu01-ib (10.30.0.1)")
    ]
    findings = check([("gpu01", "10.30.0.1")], nodes, ["gpu"], resolver=fake_resolver({}))
    assert [(f["problem"], f["detail"]) for f in findings] == [
        ("slurm_unresolved", "SLURM's NodeAddr gpu01-ib does not resolve")
    ]


def test_check_dns_uses_node_host_name() -> None:
    resolver = fake_resolver({"n1": ["10.77.0.11"], "n2": ["10.77.1.12"]})
    findings = check(GOOD, SITE, check_dns=True, resolver=resolver)
    assert [(f["name"], f["problem"], f["detail"]) for f in findings] == [
        ("n2", "dns_mismatch", "DNS resolves n2 to 10.77.1.12"),
        ("n3", "dns_unresolved", "host name n3 does not resolve"),
    ]
    # Without SLURM the node name is the host name.
    findings = check([("n1", "10.77.0.11")], check_dns=True, resolver=resolver)
    assert findings == []


def test_format_findings_names_every_entry() -> None:
    findings = [
        sn.finding("n2", "10.77.0.11", "duplicate_ip", "IP 10.77.0.11 is also given for n1"),
        sn.finding("n9 ", "10.77.0.19", "unknown_node", "SLURM has no node n9"),
    ]
    assert sn.format_findings(findings) == (
        "node map: 2 problems: 'n2' = '10.77.0.11': IP 10.77.0.11 is also given for n1; "
        "'n9 ' = '10.77.0.19': SLURM has no node n9"
    )
    assert sn.format_findings(findings[:1]).startswith("node map: 1 problem: ")


# --- the map file --------------------------------------------------------------------------


def test_render_node_map_round_trips_through_yaml() -> None:
    mapping = {
        "n10": "10.0.0.10",
        "n2": "10.0.0.2",
        "on": "10.0.0.3",
        "0n": "10.0.0.4",
        "v6": "fe80::1",
        "x:y": "1:2::3",
    }
    text = sn.render_node_map(mapping)
    assert text.splitlines() == [
        "# SLURM node name -> IP address for Ray (written by rayhpc.slurm.node_map)",
        '"0n": 10.0.0.4',
        "n2: 10.0.0.2",
        "n10: 10.0.0.10",
        '"on": 10.0.0.3',
        'v6: "fe80::1"',
        '"x:y": "1:2::3"',
    ]
    assert yaml.safe_load(text) == mapping
