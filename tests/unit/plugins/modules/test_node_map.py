# Copyright (c) 2026, rayhpc.slurm developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""rayhpc.slurm.node_map through main(): scontrol is mocked with real output of the local site."""

from __future__ import annotations

import json
import os
import socket
import stat
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.testing import patch_module_args
from ansible_collections.rayhpc.slurm.plugins.modules import node_map

FIXTURES = Path(__file__).parent.parent / "fixtures"
LOCALSITE = (FIXTURES / "scontrol_show_node_localsite.txt").read_text()
HPC = (FIXTURES / "scontrol_show_node_hpc.txt").read_text()
GOOD = {"n1": "10.77.0.11", "n2": "10.77.0.12", "n3": "10.77.0.13"}
GOOD_FILE = (
    "# SLURM node name -> IP address for Ray (written by rayhpc.slurm.node_map)\n"
    "n1: 10.77.0.11\nn2: 10.77.0.12\nn3: 10.77.0.13\n"
)


class Run:
    """One module run: its parsed JSON result, whether it failed, and the scontrol calls."""

    def __init__(self, result: dict[str, Any], calls: list[Any]) -> None:
        self.result = result
        self.failed = bool(result.get("failed"))
        self.calls = calls


@pytest.fixture
def run(capsys: pytest.CaptureFixture[str]):
    def runner(
        args: dict[str, Any],
        scontrol: tuple[int, str, str] = (0, LOCALSITE, ""),
        check_mode: bool = False,
        diff: bool = False,
        scontrol_path: str | None = "/usr/bin/scontrol",
    ) -> Run:
        module_args = dict(args, _ansible_check_mode=check_mode, _ansible_diff=diff)
        with (
            patch_module_args(module_args),
            mock.patch.object(AnsibleModule, "get_bin_path", return_value=scontrol_path),
            mock.patch.object(AnsibleModule, "run_command", return_value=scontrol) as run_command,
            pytest.raises(SystemExit),
        ):
            node_map.main()
        return Run(json.loads(capsys.readouterr().out), run_command.call_args_list)

    return runner


@pytest.fixture
def no_dns(monkeypatch: pytest.MonkeyPatch) -> None:
    def getaddrinfo(host, *args):
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)


def test_good_map_passes(run) -> None:
    out = run({"nodes": GOOD})
    assert not out.failed, out.result
    assert out.result["changed"] is False
    assert out.result["mapping"] == GOOD
    assert out.result["findings"] == []
    assert out.result["slurm_nodes"] == 3
    assert out.calls[0].args[0] == ["/usr/bin/scontrol", "show", "node", "-o"]


def test_without_nodes_the_map_is_slurms_node_addr(run) -> None:
    out = run({"partitions": ["debug"]})
    assert out.result["mapping"] == GOOD


def test_list_form_and_normalisation(run) -> None:
    nodes = [
        {"name": "n3 ", "ip": " 10.77.0.13"},
        {"name": "n1", "ip": "10.77.0.11"},
        {"name": "n2", "ip": "10.77.0.12"},
    ]
    out = run({"nodes": nodes})
    assert list(out.result["mapping"].items()) == list(GOOD.items())


@pytest.mark.parametrize(
    ("nodes", "bad"),
    [
        (
            {"n1": "10.77.0.11", "n2": "10.77.0.300", "n3": "10.77.0.13"},
            [("n2", "10.77.0.300", "malformed_ip")],
        ),
        (
            {"n1": "10.77.0.11", "n2": "10.77.0.11", "n3": "10.77.0.13"},
            [
                ("n1", "10.77.0.11", "duplicate_ip"),
                ("n2", "10.77.0.11", "duplicate_ip"),
                ("n2", "10.77.0.11", "slurm_mismatch"),
            ],
        ),
        (
            [
                {"name": "n1", "ip": "10.77.0.11"},
                {"name": "n2", "ip": "10.77.0.12"},
                {"name": "n3", "ip": "10.77.0.13"},
                {"name": "n3 ", "ip": "10.77.0.13"},
            ],
            [
                ("n3", "10.77.0.13", "duplicate_ip"),
                ("n3", "10.77.0.13", "duplicate_name"),
                ("n3 ", "10.77.0.13", "duplicate_ip"),
                ("n3 ", "10.77.0.13", "duplicate_name"),
            ],
        ),
        (dict(GOOD, n9="10.77.0.19"), [("n9", "10.77.0.19", "unknown_node")]),
        ({"n1": "10.77.0.11", "n2": "10.77.0.12"}, [("n3", "10.77.0.13", "missing_node")]),
        (dict(GOOD, n3="10.77.0.99"), [("n3", "10.77.0.99", "slurm_mismatch")]),
    ],
)
def test_each_finding_fails_naming_the_entry(run, nodes, bad) -> None:
    out = run({"nodes": nodes})
    assert out.failed
    assert sorted((f["name"], f["value"], f["problem"]) for f in out.result["findings"]) == bad
    for entry in bad:
        assert f"{entry[0]!r} = {entry[1]!r}: " in out.result["msg"]
    assert "mapping" not in out.result


def test_every_bad_entry_is_in_the_message(run) -> None:
    nodes = {
        "n1": "10.77.0.11",
        "n2": "10.77.0.11",
        "n3": "10.77.0.99",
        "n4": "10.77.0.14",
        "n5": "bogus",
    }
    out = run({"nodes": nodes})
    msg = out.result["msg"]
    # One entry's problems together, in the order of the entries.
    assert msg == (
        "node map: 7 problems: "
        "'n1' = '10.77.0.11': IP 10.77.0.11 is also given for n2; "
        "'n2' = '10.77.0.11': IP 10.77.0.11 is also given for n1; "
        "'n2' = '10.77.0.11': SLURM's NodeAddr is 10.77.0.12; "
        "'n3' = '10.77.0.99': SLURM's NodeAddr is 10.77.0.13; "
        "'n4' = '10.77.0.14': SLURM has no node n4; "
        "'n5' = 'bogus': not an IP address; "
        "'n5' = 'bogus': SLURM has no node n5"
    )


def test_partitions(run) -> None:
    resolved = [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("10.30.0.1", 0))]
    with mock.patch.object(socket, "getaddrinfo", return_value=resolved):
        out = run({"nodes": {"gpu01": "10.30.0.1"}, "partitions": ["gpu"]}, scontrol=(0, HPC, ""))
        assert out.result["mapping"] == {"gpu01": "10.30.0.1"}
        out = run(
            {"nodes": {"gpu01": "10.30.0.1"}, "partitions": ["batch", "gpus"]},
            scontrol=(0, HPC, ""),
        )
    assert out.failed
    assert sorted((f["name"], f["problem"]) for f in out.result["findings"]) == [
        ("cpu01", "missing_node"),
        ("cpu02", "missing_node"),
        ("gpus", "unknown_partition"),
    ]


def test_check_dns(run, no_dns) -> None:
    out = run({"nodes": GOOD, "check_dns": True})
    assert out.failed
    assert [(f["name"], f["problem"]) for f in out.result["findings"]] == [
        ("n1", "dns_unresolved"),
        ("n2", "dns_unresolved"),
        ("n3", "dns_unresolved"),
    ]
    resolved = [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("10.77.1.1", 0))]
    with mock.patch.object(socket, "getaddrinfo", return_value=resolved):
        out = run({"nodes": {"n1": "10.77.0.11"}, "from_slurm": False, "check_dns": True})
    assert out.result["findings"][0]["detail"] == "DNS resolves n1 to 10.77.1.1"


def test_from_slurm_false_checks_the_map_alone(run) -> None:
    out = run({"nodes": {"anything": "10.1.1.1"}, "from_slurm": False})
    assert not out.failed
    assert out.calls == []
    assert out.result["mapping"] == {"anything": "10.1.1.1"}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ({"from_slurm": False}, "nothing to validate: give nodes, or set from_slurm=true"),
        (
            {"nodes": GOOD, "from_slurm": False, "partitions": ["debug"]},
            "partitions need from_slurm=true",
        ),
        (
            {"nodes": "n1=10.77.0.11"},
            "'nodes' = 'n1=10.77.0.11': nodes must be a dict name: ip or a list of {name, ip}",
        ),
    ],
)
def test_bad_options(run, args, message) -> None:
    out = run(args)
    assert out.failed
    assert message in out.result["msg"]


def test_scontrol_failure_is_reported(run) -> None:
    err = "slurm_load_node error: Unable to contact slurm controller (connect failure)\n"
    out = run({"nodes": GOOD}, scontrol=(1, "", err))
    assert out.failed
    assert out.result["msg"] == (
        "`/usr/bin/scontrol show node -o` failed (rc=1): "
        "slurm_load_node error: Unable to contact slurm controller (connect failure)"
    )


def test_scontrol_not_installed(run) -> None:
    out = run({"nodes": GOOD}, scontrol_path=None)
    assert out.failed
    assert "scontrol not found on PATH" in out.result["msg"]


def test_slurm_conf_is_passed(run, tmp_path: Path) -> None:
    conf = tmp_path / "slurm.conf"
    conf.write_text("ClusterName=test\n")
    out = run({"nodes": GOOD, "slurm_conf": str(conf)})
    assert out.calls[0].kwargs["environ_update"] == {"SLURM_CONF": str(conf)}


# --- writing dest --------------------------------------------------------------------------


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_write_then_unchanged(run, tmp_path: Path) -> None:
    dest = tmp_path / "node_map.yaml"
    first = run({"nodes": GOOD, "dest": str(dest), "mode": "0640"})
    assert first.result["changed"] is True
    assert first.result["dest"] == str(dest)
    assert dest.read_text() == GOOD_FILE
    assert mode_of(dest) == 0o640
    inode = dest.stat().st_ino
    second = run({"nodes": GOOD, "dest": str(dest), "mode": "0640"})
    assert second.result["changed"] is False
    assert dest.stat().st_ino == inode  # not rewritten
    # SLURM's own NodeAddr gives the same file.
    assert run({"dest": str(dest), "mode": "0640"}).result["changed"] is False
    assert not [
        p for p in tmp_path.iterdir() if p.name.startswith(".node_map.")
    ]  # no temp file left


def test_check_mode_writes_nothing(run, tmp_path: Path) -> None:
    dest = tmp_path / "node_map.yaml"
    out = run({"nodes": GOOD, "dest": str(dest), "mode": "0644"}, check_mode=True, diff=True)
    assert out.result["changed"] is True
    assert not dest.exists()
    assert out.result["diff"][0] == {
        "before_header": str(dest),
        "after_header": str(dest),
        "before": "",
        "after": GOOD_FILE,
    }
    dest.write_text("n1: 10.77.0.11\n")
    dest.chmod(0o600)
    out = run({"nodes": GOOD, "dest": str(dest), "mode": "0644"}, check_mode=True)
    assert out.result["changed"] is True
    assert dest.read_text() == "n1: 10.77.0.11\n"
    assert mode_of(dest) == 0o600


def test_diff_of_a_changed_map(run, tmp_path: Path) -> None:
    dest = tmp_path / "node_map.yaml"
    run(
        {
            "nodes": {"n1": "10.77.0.11", "n2": "10.77.0.12", "n3": "10.77.0.13"},
            "dest": str(dest),
            "mode": "0644",
        }
    )
    old = dest.read_text()
    site = LOCALSITE.replace("NodeAddr=10.77.0.13", "NodeAddr=10.77.0.23")
    out = run(
        {"nodes": dict(GOOD, n3="10.77.0.23"), "dest": str(dest), "mode": "0600"},
        scontrol=(0, site, ""),
        diff=True,
    )
    assert out.result["changed"] is True
    content_diff, mode_diff = out.result["diff"]
    assert content_diff["before"] == old
    assert content_diff["after"] == old.replace("10.77.0.13", "10.77.0.23")
    assert mode_diff == {
        "before_header": f"{dest} (attributes)",
        "after_header": f"{dest} (attributes)",
        "before": {"mode": "0644"},
        "after": {"mode": "0600"},
    }
    assert dest.read_text() == content_diff["after"]
    assert mode_of(dest) == 0o600


def test_mode_change_alone_is_a_change(run, tmp_path: Path) -> None:
    dest = tmp_path / "node_map.yaml"
    run({"nodes": GOOD, "dest": str(dest), "mode": "0644"})
    out = run({"nodes": GOOD, "dest": str(dest), "mode": "0600"})
    assert out.result["changed"] is True
    assert mode_of(dest) == 0o600


def test_a_bad_map_writes_nothing(run, tmp_path: Path) -> None:
    dest = tmp_path / "node_map.yaml"
    dest.write_text(GOOD_FILE)
    out = run({"nodes": dict(GOOD, n3="10.77.0.99"), "dest": str(dest)})
    assert out.failed
    assert dest.read_text() == GOOD_FILE


def test_dest_directory_must_exist(run, tmp_path: Path) -> None:
    out = run({"nodes": GOOD, "dest": str(tmp_path / "missing" / "node_map.yaml")})
    assert out.failed
    assert out.result["msg"] == f"the directory of dest, {tmp_path / 'missing'}, does not exist"
    assert not os.path.exists(tmp_path / "missing")
