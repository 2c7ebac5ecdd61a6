"""``ray-slurm-node``: a node's address and free ports for its script, in one quick process."""

from __future__ import annotations

import os
import subprocess
import sys

from ray_slurm.cli.node import main
from ray_slurm.host.net import free_ports


def test_it_prints_the_node_address_then_the_ports(fake_bin, tmp_path, monkeypatch, capsys):
    fake_bin("sinfo", 'echo "n1|10.0.0.5|n1"; echo "n2|10.0.0.6|n2"')
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}:{os.environ['PATH']}")
    monkeypatch.setenv("SLURMD_NODENAME", "n2")
    assert main(["2", "--seed", "99"]) == 0
    ip, *ports = capsys.readouterr().out.split()
    assert (ip, [int(p) for p in ports]) == ("10.0.0.6", free_ports(2, "99"))


def test_a_node_map_or_a_known_address_wins_over_slurm(fake_bin, tmp_path, capsys):
    fake_bin("sinfo", "exit 1")  # never asked
    node_map = tmp_path / "map.yaml"
    node_map.write_text("n1: 192.168.1.1\n")
    assert main(["1", "--seed", "1", "--node", "n1", "--node-map", str(node_map)]) == 0
    assert capsys.readouterr().out.split()[0] == "192.168.1.1"
    assert main(["4", "--seed", "1", "--ip", "10.0.0.9"]) == 0
    assert capsys.readouterr().out.split()[0] == "10.0.0.9"


def test_it_waits_for_an_unreachable_slurmctld(fake_bin, tmp_path, monkeypatch, capsys):
    """A job that starts while slurmctld is away must not fail: it waits for SLURM to answer."""
    count = tmp_path / "count"
    fake_bin("sinfo", f'echo x >> {count}\n'
             f'if [ "$(wc -l < {count})" -lt 3 ]; then\n'
             '  echo "slurm_load_node: Unable to contact slurm controller (connect failure)" >&2\n'
             '  exit 1\nfi\necho "n1|10.0.0.5|n1"')  # fmt: skip
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}:{os.environ['PATH']}")
    monkeypatch.setattr("ray_slurm.cli.node.time.sleep", lambda s: None)
    assert main(["1", "--seed", "1", "--node", "n1"]) == 0
    assert capsys.readouterr().out.split()[0] == "10.0.0.5"
    assert len(count.read_text().splitlines()) == 3

    count.write_text("")
    assert main(["1", "--seed", "1", "--node", "n1", "--wait", "0"]) == 1  # fails at once


def test_an_unknown_node_is_named_without_a_traceback(fake_bin, tmp_path, monkeypatch, caplog):
    fake_bin("sinfo", 'echo "n1|10.0.0.5|n1"')
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}:{os.environ['PATH']}")
    assert main(["1", "--seed", "1", "--node", "n9"]) == 1
    assert "node 'n9' has no address in SLURM (sinfo NodeAddr)" in caplog.text


def test_it_imports_neither_ray_nor_the_cli_nor_templates():
    """It runs in every job before `ray start`: only what it needs is imported (~0.1 s)."""
    code = ("import sys, ray_slurm.cli.node\n"
            "heavy = {'ray', 'jinja2', 'ray_slurm.cli.main', 'ray_slurm.config',\n"
            "         'ray_slurm.backends.factory', 'ray_slurm.backends.slurm.jobscript'}\n"
            "sys.exit(sorted(heavy & set(sys.modules)) or 0)")  # fmt: skip
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr


def test_a_temp_root_others_control_is_refused_before_anything_is_written(tmp_path, caplog):
    """The node's directory (mktemp in provider.temp_root) holds its TLS key and Ray's sockets:
    in a temp_root another account owns, or may write to without the sticky bit, they could
    rename it and put their own in its place. The node refuses, naming the directory."""
    ca = tmp_path / "ca.pem"
    ca.write_text("never read")
    for name, plant in {
        "loose": lambda d: os.chmod(d, 0o777),
        "theirs": lambda d: os.chown(d, 65534, 65534),
    }.items():
        temp_root = tmp_path / name
        temp_root.mkdir()
        plant(temp_root)
        node_dir = temp_root / "rs-7.abcdef"
        node_dir.mkdir(mode=0o700)
        argv = ["1", "--seed", "7", "--ip", "10.0.0.9", "--tls-ca", str(ca), "--tls-out",
                str(node_dir)]  # fmt: skip
        assert main(argv) == 1
        assert f"provider.temp_root on {os.uname().nodename}: {temp_root} " in caplog.text
        assert os.listdir(node_dir) == []
    assert "has mode 0777: others may write to it and it is not sticky" in caplog.text
    assert "is owned by uid 65534, neither root nor you" in caplog.text


def test_a_node_dir_in_a_sticky_shared_temp_root_is_used(tmp_path, capsys):
    from ray_slurm.host import tls

    temp_root = tmp_path / "tmp"
    temp_root.mkdir()
    os.chmod(temp_root, 0o1777)  # as /tmp
    node_dir = temp_root / "rs-7.abcdef"
    node_dir.mkdir(mode=0o700)
    ca = tmp_path / "ca.pem"
    tls.new_ca(ca, "test")
    argv = ["1", "--seed", "7", "--ip", "10.0.0.9", "--tls-ca", str(ca), "--tls-out", str(node_dir)]
    assert main(argv) == 0
    assert capsys.readouterr().out.split()[0] == "10.0.0.9"
    assert (node_dir / tls.CERT).exists()
