"""The ``ray-slurm`` command: port choice, the head's address record and ``env`` for drivers."""

from __future__ import annotations

import json
import logging
import socket
import stat
import subprocess
import sys

import pytest
import yaml
from conftest import mode

from ray_slurm.cli.main import main
from ray_slurm.host.net import PORT_RANGE, free_ports
from ray_slurm.host.state import ClusterDir


def hold(port: int) -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("0.0.0.0", port))
    return s


# ---------------------------------------------------------------------------------- free ports


def test_free_ports_distinct_and_in_range():
    ports = free_ports(4, "12345")
    assert len(ports) == 4
    assert len(set(ports)) == 4
    low, high = PORT_RANGE
    assert all(low <= p < high for p in ports)
    assert PORT_RANGE[0] > 19999  # above Ray's worker ports
    assert PORT_RANGE[1] <= 32768  # below the ephemeral range


def test_free_ports_same_seed_same_ports():
    assert free_ports(3, "job-7") == free_ports(3, "job-7")


def test_free_ports_seeds_spread_apart():
    starts = {free_ports(1, str(job_id))[0] for job_id in range(1000, 1010)}
    assert len(starts) == 10


def test_free_ports_skip_a_held_port():
    ports = free_ports(3, "seed-held")
    with hold(ports[0]):
        again = free_ports(3, "seed-held")
    assert ports[0] not in again
    assert again[:2] == ports[1:]


def test_free_ports_range_exhausted():
    port = free_ports(1, "exhausted")[0]
    with hold(port), pytest.raises(RuntimeError, match="fewer than 1 free ports"):
        free_ports(1, "exhausted", port_range=(port, port + 1))


# -------------------------------------------------------------------------------- publish-head


def test_publish_head_then_read_head(tmp_path):
    root = tmp_path / "state" / "demo"
    argv = [
        "publish-head", str(root), "--node-id", "4242", "--ip", "10.0.0.7",
        "--gcs-port", "24001", "--dashboard-port", "24002", "--client-port", "24003",
        "--temp-dir", "/tmp/rs-4242",
    ]  # fmt: skip
    assert main(argv) == 0
    cluster = ClusterDir(tmp_path / "state", "demo")
    head = cluster.read_head()
    assert head is not None
    assert head["node_id"] == "4242"
    assert head["ip"] == "10.0.0.7"
    assert (head["gcs_port"], head["dashboard_port"], head["client_port"]) == (24001, 24002, 24003)
    assert head["host"] == socket.gethostname()
    assert isinstance(head["started"], float)
    assert head["autoscaler_log"] == "/tmp/rs-4242/session_latest/logs/monitor.log"
    assert mode(cluster.head_file) == 0o600
    assert mode(cluster.root) == 0o700


def test_publish_head_rejects_non_numeric_ports(tmp_path):
    with pytest.raises(SystemExit):
        main(["publish-head", str(tmp_path / "c"), "--node-id", "1", "--ip", "10.0.0.1",
              "--gcs-port", "x", "--dashboard-port", "1", "--client-port", "2",
              "--temp-dir", "/tmp/x"])  # fmt: skip
    assert not (tmp_path / "c" / "head.json").exists()


# ---------------------------------------------------------------------------------------- env


def head_runs(cluster, bootstrapped, fake_bin, tmp_path, node_id="77"):
    """The head's job runs (squeue lists it), with the config its autoscaler reads."""
    provider = {**bootstrapped["provider"], "slurm_bin": str(tmp_path / "bin")}
    uploaded = {**bootstrapped, "cluster_name": cluster.root.name, "provider": provider}
    cluster.create()
    cluster.autoscaling_config.write_text(yaml.safe_dump(uploaded))
    name = f"ray.{cluster.root.name}.head.{bootstrapped['head_node_type']}"
    fake_bin("squeue", f"echo '{node_id}|RUNNING|n1|UNLIMITED|{name}|None'")


def test_env_prints_exports(config_file, state_dir, capsys, bootstrapped, fake_bin, tmp_path):
    cluster = ClusterDir(state_dir, "example").create()
    cluster.new_secrets()
    head_runs(cluster, bootstrapped, fake_bin, tmp_path)
    cluster.publish_head({"ip": "10.0.0.7", "gcs_port": 24001, "dashboard_port": 24002,
                          "node_id": "77", "ports_held": True})  # fmt: skip
    assert main(["env", str(config_file)]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert "export RAY_ADDRESS=10.0.0.7:24001" in lines
    assert "export RAY_AUTH_MODE=token" in lines
    assert f"export RAY_AUTH_TOKEN_PATH={cluster.token_file}" in lines
    assert "export RAY_SLURM_DASHBOARD=http://10.0.0.7:24002" in lines
    # TLS: a certificate of the cluster's CA for this host, in the cluster's private directory
    host = cluster.tls_dir / f"host-{socket.gethostname()}"
    assert "export RAY_USE_TLS=1" in lines
    assert f"export RAY_TLS_SERVER_CERT={host}/tls.crt" in lines
    assert f"export RAY_TLS_CA_CERT={host}/ca.crt" in lines
    assert stat.S_IMODE((host / "tls.key").stat().st_mode) == 0o600

    # what a user does with it: eval in a shell
    shell = subprocess.run(
        ["bash", "-c", 'eval "$1"; printf "%s|%s|%s" "$RAY_ADDRESS" "$RAY_AUTH_MODE" '
         '"$RAY_AUTH_TOKEN_PATH"', "_", out],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert shell.stdout == f"10.0.0.7:24001|token|{cluster.token_file}"


def test_env_refuses_a_head_that_is_gone(
    config_file, state_dir, capsys, caplog, bootstrapped, fake_bin, tmp_path
):
    """Its job was killed without a chance to take its record: its address may be anyone's."""
    cluster = ClusterDir(state_dir, "example").create()
    cluster.new_secrets()
    head_runs(cluster, bootstrapped, fake_bin, tmp_path, node_id="77")
    cluster.publish_head({"ip": "10.0.0.7", "gcs_port": 24001, "node_id": "76",
                          "ports_held": True})  # fmt: skip
    with caplog.at_level(logging.ERROR, logger="ray_slurm.cli.main"):
        assert main(["env", str(config_file)]) == 1
    assert capsys.readouterr().out == ""
    assert "the head of the cluster at" in caplog.text and "no longer runs" in caplog.text
    assert "76 is gone" in caplog.text


def test_env_without_the_clusters_ca_names_it(
    config_file, state_dir, capsys, caplog, bootstrapped, fake_bin, tmp_path
):
    """A head started before this version (or a CA removed by hand): an error, no traceback."""
    cluster = ClusterDir(state_dir, "example").create()
    head_runs(cluster, bootstrapped, fake_bin, tmp_path)
    cluster.publish_head({"ip": "10.0.0.7", "gcs_port": 24001, "dashboard_port": 24002,
                          "node_id": "77", "ports_held": True})  # fmt: skip
    with caplog.at_level(logging.ERROR, logger="ray_slurm.cli.main"):
        assert main(["env", str(config_file)]) == 1
    assert capsys.readouterr().out == ""
    assert f"cannot read the cluster's CA {cluster.ca_file}" in caplog.text
    assert "run `ray up`" in caplog.text


def test_env_quotes_odd_state_dir(raw_config, tmp_path, capsys, bootstrapped, fake_bin):
    import yaml

    state = tmp_path / "my state"
    raw_config["provider"]["state_dir"] = str(state)
    cfg = tmp_path / "odd.yaml"
    cfg.write_text(yaml.safe_dump(raw_config))
    ClusterDir(state, "example").create().new_secrets()
    head_runs(ClusterDir(state, "example"), bootstrapped, fake_bin, tmp_path)
    ClusterDir(state, "example").publish_head(
        {"ip": "10.0.0.7", "gcs_port": 1, "dashboard_port": 2, "node_id": "77", "ports_held": True}
    )
    assert main(["env", str(cfg)]) == 0
    out = capsys.readouterr().out
    shell = subprocess.run(["bash", "-c", 'eval "$1"; printf %s "$RAY_AUTH_TOKEN_PATH"', "_", out],
                           capture_output=True, text=True, check=True)  # fmt: skip
    assert shell.stdout == str(state / "example" / "token")


def test_env_without_head_fails_with_a_message(config_file, state_dir, capsys, caplog):
    with caplog.at_level(logging.ERROR, logger="ray_slurm.cli.main"):
        assert main(["env", str(config_file)]) == 1
    assert capsys.readouterr().out == ""
    assert "no running head" in caplog.text
    assert str(state_dir / "example") in caplog.text


def test_env_with_incomplete_head_record_fails(config_file, state_dir, capsys, caplog):
    ClusterDir(state_dir, "example").publish_head({"ip": "10.0.0.7"})
    with caplog.at_level(logging.ERROR, logger="ray_slurm.cli.main"):
        assert main(["env", str(config_file)]) == 1
    assert "gcs_port" in caplog.text


def test_env_missing_config_file_fails(tmp_path, caplog):
    with caplog.at_level(logging.ERROR, logger="ray_slurm.cli.main"):
        assert main(["env", str(tmp_path / "missing.yaml")]) == 1
    assert "missing.yaml" in caplog.text


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("- a list\n", "not a Ray cluster config"),
        ("provider: 3\n", "not a Ray cluster config"),
        ("cluster_name: a b\nprovider: {}\n", "cluster_name: 'a b' must match"),
        ("cluster_name: c\nprovider: {state_dir: [x]}\n", "provider.state_dir: expected a path"),
    ],
)
def test_env_refuses_a_config_it_cannot_read_naming_the_value(tmp_path, caplog, text, named):
    """``env`` reads only where the cluster is; a yaml of the wrong shape is named, not a
    traceback (it was an AttributeError)."""
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with caplog.at_level(logging.ERROR, logger="ray_slurm.cli.main"):
        assert main(["env", str(path)]) == 1
    assert named in caplog.text


def test_wait_head_gives_up(tmp_path, caplog):
    with caplog.at_level(logging.ERROR, logger="ray_slurm.cli.main"):
        assert main(["wait-head", "--cluster-dir", str(tmp_path / "c"), "--timeout", "0"]) == 1
    assert "did not come up" in caplog.text


def test_head_json_is_what_env_reads(tmp_path, capsys, bootstrapped, fake_bin):
    """publish-head (in the head's job) and env (in the user's shell) agree on the record."""
    import yaml

    cfg = {"cluster_name": "demo", "provider": {"state_dir": str(tmp_path / "s")}}
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(cfg))
    root = tmp_path / "s" / "demo"
    assert main(["publish-head", str(root), "--node-id", "1", "--ip", "10.9.9.9", "--gcs-port",
                 "24100", "--dashboard-port", "24101", "--client-port", "24102",
                 "--temp-dir", "/tmp/x"]) == 0  # fmt: skip
    capsys.readouterr()
    ClusterDir.at(root).new_secrets()  # as the provider does when it launches the head
    head_runs(ClusterDir.at(root), bootstrapped, fake_bin, tmp_path, node_id="1")
    ClusterDir.at(root).mark_head_holding("/tmp/x")  # as hold-ports does once Ray listens
    assert main(["env", str(path)]) == 0
    assert "export RAY_ADDRESS=10.9.9.9:24100" in capsys.readouterr().out.splitlines()
    assert json.loads((root / "head.json").read_text())["gcs_port"] == 24100


# -------------------------------------------------------------------------------------- render


def test_render_prints_the_sbatch_command_and_script(config_file, capsys):
    assert (
        main(["render", str(config_file), "--node-type", "cpu", "--head-address", "1.2.3.4:5"]) == 0
    )
    out = capsys.readouterr().out
    assert out.startswith("# node type cpu (worker): sbatch --parsable ")
    assert "#SBATCH --job-name=ray.example.worker.cpu" in out
    assert "--address=1.2.3.4:5" in out


def test_render_output_writes_only_when_changed(config_file, tmp_path, capsys):
    out_dir = tmp_path / "jobs"
    assert main(["render", str(config_file), "--output", str(out_dir)]) == 0
    first = capsys.readouterr().out
    assert f"changed: {out_dir / 'worker-cpu.sh'}" in first
    assert f"changed: {out_dir / 'head-head.sh'}" in first
    assert main(["render", str(config_file), "--output", str(out_dir)]) == 0
    assert "changed" not in capsys.readouterr().out
    subprocess.run(["bash", "-n", str(out_dir / "worker-cpu.sh")], check=True)


def test_render_prune_removes_the_scripts_of_types_the_config_no_longer_has(
    config_file, tmp_path, capsys
):
    """The site role renders into the shared jobs directory and leaves the naming of scripts to
    the provider: --prune removes what this render did not write."""
    out_dir = tmp_path / "jobs"
    out_dir.mkdir()
    (out_dir / "worker-gone.sh").write_text("#!/bin/bash\n")
    (out_dir / "README").write_text("not a script\n")
    assert main(["render", str(config_file), "--output", str(out_dir), "--prune"]) == 0
    assert f"removed: {out_dir / 'worker-gone.sh'}" in capsys.readouterr().out
    assert sorted(p.name for p in out_dir.iterdir()) == ["README", "head-head.sh", "worker-cpu.sh"]
    assert main(["render", str(config_file), "--output", str(out_dir), "--prune"]) == 0
    assert capsys.readouterr().out == ""  # nothing changed, nothing removed
    assert main(["render", str(config_file), "--node-type", "cpu", "--output", str(out_dir),
                 "--prune"]) == 2  # fmt: skip
    assert "--prune needs --output and all node types" in capsys.readouterr().err
    assert (out_dir / "head-head.sh").exists()


def test_render_shows_the_pod_of_a_kubernetes_type_and_writes_no_script(
    raw_config, tmp_path, capsys
):
    from ray_slurm.config.kubetypes import head_versions

    image = f"rayproject/ray:{head_versions().split()[0]}"
    raw_config["available_node_types"]["burst"] = {
        "node_config": {"backend": "kubernetes", "image": image, "cpus": 2, "memory": "2G"}
    }
    path = tmp_path / "burst.yaml"
    path.write_text(yaml.safe_dump(raw_config))
    assert main(["render", str(path), "--node-type", "burst", "--head-address", "1.2.3.4:5"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("# node type burst (worker): a Kubernetes pod\n")
    pod = yaml.safe_load(out.split("\n", 1)[1])
    assert pod["kind"] == "Pod" and pod["spec"]["containers"][0]["image"] == image
    assert "--address=1.2.3.4:5" in pod["spec"]["containers"][0]["args"]
    out_dir = tmp_path / "jobs"
    assert main(["render", str(path), "--output", str(out_dir)]) == 0
    assert sorted(p.name for p in out_dir.iterdir()) == ["head-head.sh", "worker-cpu.sh"]


def test_render_rejects_a_bad_config_naming_the_field(config_file, caplog):
    config_file.write_text(config_file.read_text().replace("cpus: 2", "cpus: -2"))
    with caplog.at_level(logging.ERROR):
        assert main(["render", str(config_file)]) == 1
    assert "available_node_types.cpu.node_config.cpus" in caplog.text


def test_the_cli_does_not_import_ray_and_the_provider_does():
    """`ray-slurm` runs in head scripts (publish-head) and for users: importing Ray (~1 s) there
    would slow them down (found by `make bench`)."""
    code = "import sys, ray_slurm.cli.main; sys.exit('ray' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0
    code = "import ray_slurm; print(ray_slurm.SlurmNodeProvider.__name__)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "SlurmNodeProvider"


# ---------------------------------------------------------------------------------- head-ended


def _ended_cluster(bootstrapped, state_dir, fake_bin, tmp_path):
    """A cluster whose head published itself, with a worker running and one pending."""
    bootstrapped["provider"]["slurm_bin"] = str(tmp_path / "bin")
    cluster = ClusterDir(state_dir, "example").create()
    cluster.autoscaling_config.write_text(yaml.safe_dump(bootstrapped))
    cluster.publish_head({"ip": "10.0.0.7", "gcs_port": 1, "temp_dir": "/tmp/rs-h1.abc/r"})
    worker = "ray.example.worker.cpu"
    fake_bin("squeue", f"echo '41|RUNNING|n1|UNLIMITED|{worker}|None'; "
                       f"echo '42|PENDING||UNLIMITED|{worker}|Resources'")  # fmt: skip
    fake_bin("scancel", f'echo "$*" >> {tmp_path}/scancel')
    return cluster


def test_an_ended_head_takes_its_record_and_cancels_its_workers(
    bootstrapped, state_dir, fake_bin, tmp_path
):
    cluster = _ended_cluster(bootstrapped, state_dir, fake_bin, tmp_path)
    argv = ["head-ended", str(cluster.root), "--temp-dir"]
    assert main([*argv, "/tmp/rs-h1.abc/r"]) == 0
    assert cluster.read_head() is None  # no client is sent to its address any more
    cancelled = (tmp_path / "scancel").read_text().split()
    assert "41" in cancelled and "42" in cancelled  # the pending one too: it cannot join


def test_an_ended_head_leaves_a_newer_heads_record_and_workers(
    bootstrapped, state_dir, fake_bin, tmp_path
):
    """`ray up` started a new head meanwhile: the old head's exit touches nothing of it."""
    cluster = _ended_cluster(bootstrapped, state_dir, fake_bin, tmp_path)
    argv = ["head-ended", str(cluster.root), "--temp-dir"]
    assert main([*argv, "/tmp/rs-h0.old/r"]) == 0
    assert cluster.read_head()["temp_dir"] == "/tmp/rs-h1.abc/r"
    assert not (tmp_path / "scancel").exists()
