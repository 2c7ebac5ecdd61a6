"""The layout reader of scripts/localsite: what each shipped layout renders, and a bad layout
refused naming the bad value (before any namespace or daemon exists)."""

from __future__ import annotations

import copy
import dataclasses
import importlib.util
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"
_spec = importlib.util.spec_from_file_location("localsite_layout", SCRIPTS / "localsite_layout.py")
assert _spec and _spec.loader
layout_mod = importlib.util.module_from_spec(_spec)
sys.modules["localsite_layout"] = layout_mod
_spec.loader.exec_module(layout_mod)

CAMPUS = yaml.safe_load((SCRIPTS / "sites" / "campus.yaml").read_text())


def test_campus_renders_the_site_the_tests_know() -> None:
    layout = layout_mod.parse(CAMPUS, "campus.yaml")
    conf = layout_mod.slurm_conf(layout, "/var/tmp/x")
    assert "ClusterName=campus\nSlurmctldHost=login(10.77.0.1)\n" in conf
    assert "NodeName=n2 NodeAddr=10.77.0.12 NodeHostname=n2 CPUs=2 RealMemory=4000 State=" in conf
    assert "PartitionName=scavenger Nodes=n1,n2,n3 MaxTime=INFINITE PriorityTier=0 State=UP" in conf
    assert "PartitionName=debug Nodes=n1,n2,n3 MaxTime=INFINITE PriorityTier=1 Default=YES" in conf
    assert "StateSaveLocation=/var/tmp/x/state" in conf
    assert "AuthInfo" not in conf and "Gres" not in conf  # the machine's munged, no GRES
    assert "AccountingStorageEnforce=associations,limits,qos" in conf
    assert "AccountingStorageHost=10.77.0.1\nAccountingStoragePort=6819" in conf


def test_campus_accounting_becomes_sacctmgr_commands_and_a_slurmdbd_conf() -> None:
    layout = layout_mod.parse(CAMPUS, "campus.yaml")
    assert layout_mod.sacctmgr_commands(layout) == [
        ["sacctmgr", "-i", "add", "cluster", "campus"],
        ["sacctmgr", "-i", "add", "qos", "onejob", "MaxSubmitJobsPerUser=1"],
        ["sacctmgr", "-i", "add", "qos", "twocpus", "GrpTRES=cpu=2"],
        ["sacctmgr", "-i", "add", "account", "physics", "Cluster=campus"],
        ["sacctmgr", "-i", "add", "user", "rsl-alice,rsl-bob,rsl-eve", "Account=physics",
         "Cluster=campus", "QOS=normal,onejob,twocpus", "DefaultQOS=normal"],
    ]  # fmt: skip
    dbd = layout_mod.slurmdbd_conf(layout, "/s", "f00")
    assert "DbdAddr=10.77.0.1\n" in dbd and "StoragePass=f00\n" in dbd
    assert "PidFile=/s/run/slurmdbd.pid" in dbd and "AuthInfo" not in dbd


def helper(*args: object, check: bool = True) -> subprocess.CompletedProcess[str]:
    """The helper as localsite runs it."""
    return subprocess.run([sys.executable, SCRIPTS / "localsite_layout.py", *map(str, args)],
                          capture_output=True, text=True, check=check)  # fmt: skip


def test_the_gpu_centre_has_its_own_munge_and_gpu_nodes() -> None:
    out = helper("slurm-conf", SCRIPTS / "sites" / "gpu-centre.yaml").stdout
    assert "AuthInfo=socket=/var/tmp/rayhpc-gpu-centre/munge/munge.socket" in out
    assert "GresTypes=gpu" in out
    assert ("NodeName=gpu1 NodeAddr=10.78.0.12 NodeHostname=gpu1 CPUs=2 RealMemory=4000 "
            "Gres=gpu:2 Features=gpu,a100 State=UNKNOWN") in out  # fmt: skip
    assert "PartitionName=gpu Nodes=gpu1,gpu2 MaxTime=1-00:00:00 PriorityTier=1 MaxNodes=2" in out
    gres = helper("gres-conf", SCRIPTS / "sites" / "gpu-centre.yaml", "/s").stdout
    assert "NodeName=gpu2 Name=gpu File=/s/dev/gpu[0-1]" in gres and "cpu1" not in gres
    assert "GPUS_MAX=2" in helper("shell", SCRIPTS / "sites" / "gpu-centre.yaml").stdout
    assert "AccountingStorageType=accounting_storage/none" in out  # no accounting there
    # Debian 13's Slurm 24.11, in a root filesystem of its own, with the RPC rate limiter on.
    assert "SlurmctldParameters=rl_enable" in out
    assert "SITE_OS=debian13" in helper("shell", SCRIPTS / "sites" / "gpu-centre.yaml").stdout


def test_campus24_is_campus_on_slurm_24_11_with_its_own_munge_for_slurmdbd_too() -> None:
    raw = yaml.safe_load((SCRIPTS / "sites" / "campus24.yaml").read_text())
    layout = layout_mod.parse(raw, "campus24.yaml")
    campus = layout_mod.parse(CAMPUS, "campus.yaml")
    assert [(n.name, n.cpus) for n in layout.nodes] == [(n.name, n.cpus) for n in campus.nodes]
    graced = [dataclasses.replace(p, grace_time_s=0) for p in layout.partitions]
    assert graced == campus.partitions and layout.accounting == campus.accounting
    conf = layout_mod.slurm_conf(layout, "/s")
    assert "AuthInfo=socket=/s/munge/munge.socket" in conf and "rl_enable" in conf
    # Preemption as current sites set it: the job's own --signal, then 30 s to leave.
    assert "PreemptParameters=send_user_signal" in conf
    assert re.search(r"(?m)^PartitionName=scavenger .*GraceTime=30 ", conf)
    # 24.11's clients sign their slurmdbd messages with AccountingStoragePass's munged.
    assert "AccountingStoragePass=/s/munge/munge.socket" in conf


def test_campus_runs_on_the_host_without_the_rate_limiter() -> None:
    layout = layout_mod.parse(CAMPUS, "campus.yaml")
    assert "SITE_OS=''" in layout_mod.shell(layout)
    conf = layout_mod.slurm_conf(layout, "/s")
    assert "rl_enable" not in conf and "PreemptParameters" not in conf and "GraceTime" not in conf


def test_shell_variables_list_the_nodes_in_order() -> None:
    text = layout_mod.shell(layout_mod.parse(CAMPUS, "campus.yaml"))
    assert "NODES=(n1 n2 n3)\nNODE_ADDRS=(10.77.0.11 10.77.0.12 10.77.0.13)" in text
    assert "RSL_PREFIX=rsl" in text and "MUNGE_MODE=host" in text


def _changed(path: str, value: Any) -> dict[str, Any]:
    raw = copy.deepcopy(CAMPUS)
    *parents, last = path.split(".")
    target: Any = raw
    for key in parents:
        target = target[int(key)] if isinstance(target, list) else target[key]
    if value is KeyError:
        del target[last]
    else:
        target[last] = value
    return raw


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        ("subnet", "10.77", "subnet: '10.77' is not a /24"),
        ("subnet", "8.8.8", "subnet: '8.8.8' is not a private network"),
        ("munge", "shared", "munge: 'shared' is not 'host' or 'own'"),
        ("prefix", "Rsl-Site", "prefix: 'Rsl-Site' is not a short name"),
        ("state_dir", "var/tmp", "state_dir: 'var/tmp' is not an absolute path"),
        ("inventory", KeyError, "'inventory' is missing"),
        ("colour", "blue", "unknown key 'colour'"),
        ("node_groups.0.count", 0, "node_groups[0].count: 0 is not a whole number 1..89"),
        ("node_groups.0.cpus", "2", "node_groups[0].cpus: '2' is not a whole number"),
        ("node_groups.0.gpus", True, "node_groups[0].gpus: True is not a whole number"),
        ("node_groups.0.features", ["a b"], "node_groups[0].features: 'a b' is not a word"),
        ("partitions.1.nodes", ["gpu"], "partitions[1].nodes: 'gpu' is not a node group"),
        ("partitions.1.max_time", "1 day", "partitions[1].max_time: '1 day' is not a SLURM time"),
        ("partitions.1.default", True, "exactly one must be default: true"),
        ("partitions.2.name", "debug", "partitions[2].name: 'debug' is used twice"),
        ("accounting.qos.1.grp_tres", "cpus=2", "accounting.qos[1].grp_tres: 'cpus=2' is not TRES"),
        ("accounting.accounts.0.qos", ["gold"], "accounting.accounts[0].qos: 'gold' is not a QOS"),
        ("accounting.accounts.0.users", ["Alice Smith"], "users: 'Alice Smith' is not a user"),
        ("accounting.accounts", [], "accounting needs at least one account"),
        ("os", "centos7", "os: 'centos7' is not one of debian12, debian13"),
        ("os", "debian13", "munge: 'host': a site on debian13 runs in a root filesystem"),
        ("rate_limit", "yes", "rate_limit: 'yes' is not true or false"),
        ("preempt_signal", 1, "preempt_signal: 1 is not true or false"),
        ("partitions.2.grace_time_s", -5, "partitions[2].grace_time_s: -5 is not a whole number"),
    ],
)
def test_a_bad_layout_is_refused_naming_the_value(path: str, value: Any, message: str) -> None:
    with pytest.raises(layout_mod.LayoutError, match=None) as caught:
        layout_mod.parse(_changed(path, value), "campus.yaml")
    assert message in str(caught.value)


def test_the_command_says_bad_layout_without_a_traceback(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(_changed("subnet", "10.77.0.0/16")))
    proc = helper("shell", bad, check=False)
    assert proc.returncode == 2
    assert f"localsite: bad layout: {bad}: subnet: '10.77.0.0/16' is not a /24" in proc.stderr
    assert "Traceback" not in proc.stderr and proc.stdout == ""
