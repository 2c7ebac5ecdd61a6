"""The rendered node scripts: SBATCH header, Ray identity and auth, ray start arguments, quoting.

Besides checking the text, two tests run a rendered script with bash, ``ray`` and ``ray-slurm``
replaced by recorders, to see the arguments Ray really gets after the shell has done its work.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from ray_slurm.backends.login import login_head_id, login_identity
from ray_slurm.backends.nodes import PORTS_TAKEN_EXIT, START_FAILED_EXIT
from ray_slurm.backends.slurm import jobscript
from ray_slurm.backends.slurm.jobscript import job_name, parse_job_name, render

HEAD_ADDRESS = "10.0.0.1:6379"
SETUP = ['echo "setup ran" > "$SETUP_MARK"', "module load python/3.12 || true"]


def bash_n(text: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", "-n"], input=text, capture_output=True, text=True, check=False)


def sbatch_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("#SBATCH")]


@pytest.fixture
def rich_settings(make_settings):
    """The example with setup lines, custom resources and extra sbatch options on ``cpu``."""

    def change(cfg):
        node_config = cfg["available_node_types"]["cpu"]["node_config"]
        node_config["setup"] = SETUP
        node_config["account"] = "proj1"
        node_config["sbatch_options"] = ["--comment=ray", "--requeue"]
        cfg["available_node_types"]["cpu"]["resources"] = {"custom:x": 1, "my-res": 2.5}

    return make_settings(change)


@pytest.fixture
def worker_text(settings, cluster):
    return render(settings, cluster, settings.spec("cpu"), head_address=HEAD_ADDRESS).text


# ------------------------------------------------------------------------------------ job names


def test_job_name_round_trip():
    name = job_name("example", "worker", "cpu")
    assert name == "ray.example.worker.cpu"
    assert parse_job_name(name, "example") == ("worker", "cpu")
    assert parse_job_name(job_name("example", "head", "head"), "example") == ("head", "head")


@pytest.mark.parametrize(
    "name",
    [
        "ray.other.worker.cpu",  # another cluster
        "ray.example2.worker.cpu",
        "ray.example.bogus.cpu",  # not a kind
        "ray.example.worker",
        "ray.example.worker.cpu.extra",
        "ray-example-worker-cpu",
        "interactive",
        "",
    ],
)
def test_parse_job_name_rejects(name):
    assert parse_job_name(name, "example") is None


# -------------------------------------------------------------------------------------- worker


def test_worker_script_path(settings, cluster):
    script = render(settings, cluster, settings.spec("cpu"), head_address=HEAD_ADDRESS)
    assert script.path == str(cluster.jobs_dir / "worker-cpu.sh")
    assert (script.kind, script.node_type) == ("worker", "cpu")


def test_worker_sbatch_header(worker_text, cluster):
    lines = worker_text.splitlines()
    assert lines[0] == "#!/bin/bash"
    header = sbatch_lines(worker_text)
    assert header == [
        "#SBATCH --job-name=ray.example.worker.cpu",
        f"#SBATCH --output={cluster.logs_dir}/%x-%j.log",
        "#SBATCH --nodes=1",
        "#SBATCH --ntasks=1",
        "#SBATCH --cpus-per-task=2",
        "#SBATCH --mem=1500M",
        "#SBATCH --signal=B:USR1@90",  # drain before the time limit (rollover)
        "#SBATCH --no-requeue",  # a requeued job would be a new Ray node under an old id
        "#SBATCH --partition=debug",
        "#SBATCH --time=01:00:00",
    ]
    # sbatch stops reading #SBATCH lines at the first command: they must all come first
    first_command = next(
        i for i, line in enumerate(lines[1:], 1) if line and not line.startswith("#")
    )
    assert all(lines.index(h) < first_command for h in header)


def test_worker_identity_and_auth(worker_text, cluster):
    lines = worker_text.splitlines()
    assert 'export RAY_CLOUD_INSTANCE_ID="$SLURM_JOB_ID"' in lines
    assert "export RAY_NODE_TYPE_NAME=cpu" in lines
    assert "export RAY_AUTH_MODE=token" in lines
    assert f"export RAY_AUTH_TOKEN_PATH={shlex.quote(str(cluster.token_file))}" in lines
    assert "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S" not in worker_text  # head only
    assert "AUTOSCALER_UPDATE_INTERVAL_S" not in worker_text
    assert "gcs_pull_resource_loads" not in worker_text


def test_worker_ray_start_arguments(worker_text, settings):
    spec = settings.spec("cpu")
    assert f"--address={HEAD_ADDRESS}" in worker_text
    assert f"--num-cpus={int(spec.resources['CPU'])} " in worker_text
    assert "--num-cpus=2 " in worker_text
    assert "--num-gpus=0" in worker_text
    assert f"--memory={spec.resources['memory']}" in worker_text
    assert f"--object-store-memory={spec.object_store_bytes}" in worker_text
    assert "--disable-usage-stats" in worker_text
    assert '"${ray_args[@]}" --block' in worker_text
    assert "--head" not in worker_text
    assert "--autoscaling-config" not in worker_text
    assert "--resources" not in worker_text  # no custom resources in the example


def test_worker_script_is_valid_bash(worker_text):
    result = bash_n(worker_text)
    assert result.returncode == 0, result.stderr


def test_bash_n_catches_broken_scripts():
    assert bash_n("if true; then\n").returncode != 0  # the check above has teeth


def test_custom_resources_are_json_and_shell_quoted(rich_settings):
    cluster = _cluster(rich_settings)
    text = render(rich_settings, cluster, rich_settings.spec("cpu"), head_address=HEAD_ADDRESS).text
    match = re.search(r"--resources=('[^']*')", text)
    assert match, text
    (word,) = shlex.split(match.group(1))
    assert json.loads(word) == {"custom:x": 1, "my-res": 2.5}
    assert bash_n(text).returncode == 0


def test_setup_lines_and_extra_options(rich_settings):
    cluster = _cluster(rich_settings)
    text = render(rich_settings, cluster, rich_settings.spec("cpu"), head_address=HEAD_ADDRESS).text
    lines = text.splitlines()
    for line in SETUP:
        assert line in lines
    header = sbatch_lines(text)
    assert "#SBATCH --account=proj1" in header
    assert "#SBATCH --comment=ray" in header
    assert "#SBATCH --requeue" in header
    # setup runs after the identity exports and before Ray starts
    assert lines.index("export RAY_AUTH_MODE=token") < lines.index(SETUP[0])
    assert lines.index(SETUP[0]) < next(i for i, ln in enumerate(lines) if " start " in ln)


def test_gpus_and_exclusive(make_settings):
    def change(cfg):
        cfg["available_node_types"]["cpu"]["node_config"].update(gpus=2, exclusive=True)

    settings = make_settings(change)
    text = render(settings, _cluster(settings), settings.spec("cpu"), HEAD_ADDRESS).text
    header = sbatch_lines(text)
    assert "#SBATCH --gres=gpu:2" in header
    assert "#SBATCH --exclusive" in header
    assert "--num-gpus=2" in text


def test_worker_without_head_address_raises(settings, cluster):
    with pytest.raises(ValueError, match="head"):
        render(settings, cluster, settings.spec("cpu"))


def test_head_address_is_shell_quoted(settings, cluster):
    text = render(settings, cluster, settings.spec("cpu"), head_address="10.0.0.1:6379; id").text
    assert "--address='10.0.0.1:6379; id'" in text


# ---------------------------------------------------------------------------------------- head


def test_login_head_script(settings, cluster):
    script = render(
        settings,
        cluster,
        settings.spec("head"),
        node_ip="10.0.0.9",
        identity=login_identity(settings, cluster),
    )
    text = script.text
    assert script.path == str(cluster.jobs_dir / "head-head.sh")
    assert sbatch_lines(text) == []
    assert "SBATCH" not in text
    assert "SLURM_JOB_ID" not in text
    lines = text.splitlines()
    assert f"export RAY_CLOUD_INSTANCE_ID={login_head_id()}" in lines
    assert "export RAY_NODE_TYPE_NAME=head" in lines
    assert "export RAY_AUTH_MODE=token" in lines
    assert "export RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S=0" in lines
    assert "export AUTOSCALER_UPDATE_INTERVAL_S=1" in lines  # the autoscaler's loop
    # and the GCS pulls the nodes' queued tasks as often as the autoscaler looks for new ones
    assert "export RAY_gcs_pull_resource_loads_period_milliseconds=100" in lines
    assert " 7 --seed " in text and " --ip 10.0.0.9)" in text  # its address is known
    assert "--head " in text
    assert '--autoscaling-config="$autoscaling_config"' in text
    assert 'export RAY_SLURM_AUTOSCALING_CONFIG="$autoscaling_config"' in text
    assert f"bootstrap_config={cluster.bootstrap_config}" in lines
    assert "--num-cpus=0 " in text
    assert "--address=" not in text
    assert bash_n(text).returncode == 0


def test_slurm_head_script(make_settings):
    def change(cfg):
        cfg["provider"]["head_mode"] = "slurm"
        cfg["available_node_types"]["head"]["node_config"] = {"cpus": 1, "memory": "2G"}
        cfg["available_node_types"]["head"]["resources"] = {}

    settings = make_settings(change)
    text = render(settings, _cluster(settings), settings.spec("head")).text
    header = sbatch_lines(text)
    assert header[0] == "#SBATCH --job-name=ray.example.head.head"
    assert "#SBATCH --cpus-per-task=1" in header
    assert "#SBATCH --mem=2048M" in header
    assert 'export RAY_CLOUD_INSTANCE_ID="$SLURM_JOB_ID"' in text.splitlines()
    assert "--head " in text
    assert "--autoscaling-config" in text
    assert bash_n(text).returncode == 0


# ------------------------------------------------------------------- running rendered scripts


def _cluster(settings):
    from ray_slurm.host.state import ClusterDir

    return ClusterDir(settings.state_dir, settings.cluster_name)


@pytest.fixture
def short_temp_root():
    """``provider.temp_root`` must be short (Ray's socket paths), so not under tmp_path."""
    path = tempfile.mkdtemp(prefix="rs", dir="/tmp")
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(autouse=True)
def no_start_pause(monkeypatch):
    """A worker's Ray that ends at start is started again after a pause: none in tests."""
    monkeypatch.setattr(jobscript, "START_PAUSE_S", 0)


@pytest.fixture
def fake_ray_env(tmp_path):
    """A ray_env whose ``ray`` and ``ray-slurm`` only record how they were called."""
    env = tmp_path / "env"
    (env / "bin").mkdir(parents=True)
    record = tmp_path / "calls"
    record.mkdir()
    scripts = {
        "ray": f"""
printf '%s\\n' "$@" > {record}/ray.args
echo start >> {record}/ray.starts
env > {record}/ray.env
for a in "$@"; do
  case "$a" in
    --temp-dir=*) d="${{a#--temp-dir=}}"; mkdir "$d" && echo yes > {record}/temp-dir.existed
                  stat -c %a "${{d%/r}}" > {record}/node-dir.mode ;;
  esac
done
exit 3
""",
        "ray-slurm": f"""
printf '%s\\n' "$*" >> {record}/ray-slurm.calls
case "$1" in
  publish-head|head-ended) ;;
  hold-ports)  # 1: Ray stopped before it held its ports (this waits for it to stop)
    if [ "${{RAY_SLURM_TEST_HOLD:-0}}" = 1 ]; then
      pid=$(printf '%s\n' "$@" | sed -n '/^--ray-pid$/{{n;p}}')
      while kill -0 "$pid" 2>/dev/null; do sleep 0.05; done
    fi
    exit "${{RAY_SLURM_TEST_HOLD:-0}}" ;;
  drain) echo $(( $(date +%s) + ${{RAY_SLURM_TEST_DRAIN_S:-60}} )) ;;  # the deadline
  *) exit 9 ;;
esac
""",
        "ray-slurm-node": f"""
printf 'ray-slurm-node %s\\n' "$*" >> {record}/ray-slurm.calls
n=$1
ip=10.0.0.5
while [ $# -gt 0 ]; do [ "$1" = --ip ] && ip=$2; shift; done
echo "$ip $(seq 25001 $((25000 + n)) | tr '\\n' ' ')"
""",
    }
    for name, body in scripts.items():
        path = env / "bin" / name
        path.write_text("#!/bin/bash\n" + body)
        path.chmod(0o755)
    return env, record


def _run(script_text: str, tmp_path: Path, job_id: str | None) -> subprocess.CompletedProcess:
    path = tmp_path / "node.sh"
    path.write_text(script_text)
    # A token and an address in the user's environment must not reach Ray.
    env = {"PATH": "/usr/bin:/bin", "SETUP_MARK": str(tmp_path / "setup.mark"),
           "RAY_AUTH_TOKEN": "from-the-environment", "RAY_ADDRESS": "10.9.9.9:1"}  # fmt: skip
    if job_id:
        env["SLURM_JOB_ID"] = job_id
    return subprocess.run(
        ["bash", str(path)], env=env, capture_output=True, text=True, timeout=10, check=False
    )


def _start_until_ray_runs(text: str, tmp_path: Path, record: Path,
                          env: dict[str, str]) -> subprocess.Popen[str]:  # fmt: skip
    """Run a node script in the background until its fake ``ray`` wrote ``ray.pid``."""
    path = tmp_path / "node.sh"
    path.write_text(text)
    proc = subprocess.Popen(["bash", str(path)], env={"PATH": "/usr/bin:/bin", **env},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    deadline = time.monotonic() + 10
    while not (record / "ray.pid").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    if not (record / "ray.pid").exists():
        proc.kill()
        raise AssertionError("the fake ray never started")
    return proc


def test_running_the_worker_script(make_settings, fake_ray_env, short_temp_root, tmp_path):
    env_dir, record = fake_ray_env

    def change(cfg):
        cfg["provider"]["ray_env"] = str(env_dir)
        cfg["provider"]["temp_root"] = short_temp_root
        node_config = cfg["available_node_types"]["cpu"]["node_config"]
        node_config["setup"] = SETUP
        cfg["available_node_types"]["cpu"]["resources"] = {"custom:x": 1, "my-res": 2}

    settings = make_settings(change)
    spec = settings.spec("cpu")
    cluster = _cluster(settings)
    text = render(settings, cluster, spec, head_address=HEAD_ADDRESS).text
    planted = Path(short_temp_root) / "rs-4242"  # a neighbour's guess at the job's temp dir
    planted.mkdir(mode=0o777)
    proc = _run(text, tmp_path, job_id="4242")

    assert proc.returncode == 3, proc.stdout + proc.stderr  # the job ends with Ray's own status
    # Ray ended, but not because it timed out registering: not started again under this job
    assert (record / "ray.starts").read_text().split() == ["start"]
    assert "starting it again" not in proc.stdout
    args = (record / "ray.args").read_text().splitlines()
    assert args[0] == "start"
    assert args[-1] == "--block"
    temp_dir = next(a for a in args if a.startswith("--temp-dir=")).removeprefix("--temp-dir=")
    # below a new private directory, named after the job but not guessable (mktemp)
    node_dir = os.path.dirname(temp_dir)
    assert re.fullmatch(rf"{re.escape(short_temp_root)}/rs-4242\.[A-Za-z0-9]{{6}}/r", temp_dir)
    assert args[1:-1] == [
        f"--address={HEAD_ADDRESS}",
        "--node-ip-address=10.0.0.5",
        f"--temp-dir={temp_dir}",
        # every agent port given: the raylet need not wait for its agents to report theirs
        "--dashboard-agent-listen-port=25001",
        "--dashboard-agent-grpc-port=25002",
        "--metrics-export-port=25003",
        "--runtime-env-agent-port=25004",
        "--disable-usage-stats",
        "--num-cpus=2",
        "--num-gpus=0",
        f"--memory={spec.resources['memory']}",
        f"--object-store-memory={spec.object_store_bytes}",
        '--resources={"custom:x": 1, "my-res": 2}',
    ]
    ray_env = dict(
        line.split("=", 1) for line in (record / "ray.env").read_text().splitlines() if "=" in line
    )
    assert ray_env["RAY_CLOUD_INSTANCE_ID"] == "4242"
    assert ray_env["RAY_NODE_TYPE_NAME"] == "cpu"
    assert ray_env["RAY_AUTH_MODE"] == "token"
    assert ray_env["RAY_AUTH_TOKEN_PATH"] == str(cluster.token_file)
    assert "RAY_AUTH_TOKEN" not in ray_env and "RAY_ADDRESS" not in ray_env
    assert ray_env["RAY_TMPDIR"] == node_dir
    assert not temp_dir.startswith(str(planted) + "/")
    assert (record / "node-dir.mode").read_text().strip() == "700"
    assert (tmp_path / "setup.mark").read_text() == "setup ran\n"
    calls = (record / "ray-slurm.calls").read_text().splitlines()
    # one quick helper before `ray start`: address, ports, and the node's TLS certificate
    assert calls[:2] == [
        f"ray-slurm-node 4 --seed 4242 --tls-ca {cluster.ca_file} --tls-out {node_dir}",
        # after `ray start`: the node goes on once Ray holds its agents' ports (no record)
        f"hold-ports {cluster.root} --ray-pid {calls[1].split()[3]} --agent-ports 25001 25002 "
        "25004",
    ]
    assert len(calls) == 2
    assert ray_env["RAY_USE_TLS"] == "1"
    assert ray_env["RAY_TLS_SERVER_CERT"] == f"{node_dir}/tls.crt"
    assert ray_env["RAY_TLS_SERVER_KEY"] == f"{node_dir}/tls.key"
    assert ray_env["RAY_TLS_CA_CERT"] == f"{node_dir}/ca.crt"
    assert (record / "temp-dir.existed").exists()  # Ray got its private temp dir
    assert not Path(temp_dir).exists()  # removed when the job ends
    assert os.listdir(short_temp_root) == ["rs-4242"]  # the planted one: never used, left alone


def test_running_the_login_head_script(make_settings, fake_ray_env, short_temp_root, tmp_path):
    env_dir, record = fake_ray_env

    def change(cfg):
        cfg["provider"]["ray_env"] = str(env_dir)
        cfg["provider"]["temp_root"] = short_temp_root

    settings = make_settings(change)
    cluster = _cluster(settings).create()
    cluster.bootstrap_config.write_text("cluster_name: example\n")  # as `ray up` would
    text = render(
        settings,
        cluster,
        settings.spec("head"),
        node_ip="10.0.0.9",
        identity=login_identity(settings, cluster),
    ).text
    proc = _run(text, tmp_path, job_id=None)

    assert proc.returncode == 3, proc.stderr
    assert (record / "ray.starts").read_text().split() == ["start"]  # a head is started once
    args = (record / "ray.args").read_text().splitlines()
    assert args[:14] == [
        "start",
        "--head",
        "--port=25001",
        "--dashboard-host=10.0.0.9",
        "--dashboard-port=25002",
        "--ray-client-server-port=25003",
        f"--autoscaling-config={cluster.autoscaling_config}",
        "--include-dashboard=true",  # a taken dashboard port fails the head
        "--node-ip-address=10.0.0.9",
        f"--temp-dir={args[9].removeprefix('--temp-dir=')}",
        "--dashboard-agent-listen-port=25004",
        "--dashboard-agent-grpc-port=25005",
        "--metrics-export-port=25006",
        "--runtime-env-agent-port=25007",
    ]
    # the autoscaler reads a private copy of what `ray up` uploaded (burst limits go there)
    assert cluster.autoscaling_config.read_text() == "cluster_name: example\n"
    assert cluster.autoscaling_config.stat().st_mode & 0o777 == 0o600
    assert "--node-ip-address=10.0.0.9" in args
    assert "--num-cpus=0" in args
    assert (record / "temp-dir.existed").exists()
    assert os.listdir(short_temp_root) == []  # the head's temp dir is gone with it
    calls = (record / "ray-slurm.calls").read_text().splitlines()
    temp_dir = calls[1].rsplit(" ", 1)[1]
    assert calls == [
        f"ray-slurm-node 7 --seed {cluster.root} --tls-ca {cluster.ca_file} "
        f"--tls-out {Path(args[9].removeprefix('--temp-dir=')).parent} --ip 10.0.0.9",
        f"publish-head {cluster.root} --node-id login-head --ip 10.0.0.9 "
        "--gcs-port 25001 --dashboard-port 25002 --client-port 25003 "
        f"--temp-dir {calls[1].rsplit(' ', 1)[1]}",
        # after `ray start`: clients are sent there once Ray holds its ports (`hold-ports`)
        f"hold-ports {cluster.root} --temp-dir {temp_dir} --ray-pid {calls[2].split()[5]} "
        "--agent-ports 25004 25005 25007",
        # as it exits: its record goes and its workers are cancelled (`head-ended`)
        f"head-ended {cluster.root} --temp-dir {temp_dir}",
    ]
    # the login head's temp dir: short, node-local, one per cluster
    temp_dir = calls[1].rsplit(" ", 1)[1]
    assert re.fullmatch(
        rf"{re.escape(short_temp_root)}/rs-h[0-9a-f]{{10}}\.[A-Za-z0-9]{{6}}/r", temp_dir
    )  # below a private directory of its own


@pytest.mark.parametrize("recovers", [False, True])
def test_a_ray_start_that_timed_out_registering_is_run_again_in_the_allocation(
    make_settings, fake_ray_env, short_temp_root, tmp_path, recovers
):
    """A raylet that missed Ray's 30 s to register (a busy head at a big scale-out): `ray start`
    runs again in the same job, up to START_ATTEMPTS times; if every attempt timed out, the job
    exits START_FAILED_EXIT (a failure at start, however long the attempts took: its type is
    backed off); if one starts, the job is a node as any other."""
    env_dir, record = fake_ray_env
    (env_dir / "bin" / "ray").write_text(f"""#!/bin/bash
echo start >> {record}/ray.starts
if [ {str(recovers).lower()} = true ] && [ "$(wc -l < {record}/ray.starts)" -ge 2 ]; then exit 0; fi
echo "Exception: {jobscript.START_TIMEOUT_SAID}. This could happen because ..." >&2
exit 1
""")

    def change(cfg):
        cfg["provider"]["ray_env"] = str(env_dir)
        cfg["provider"]["temp_root"] = short_temp_root

    settings = make_settings(change)
    text = render(settings, _cluster(settings), settings.spec("cpu"), head_address=HEAD_ADDRESS)
    proc = _run(text.text, tmp_path, job_id="4343")
    starts = (record / "ray.starts").read_text().split()
    # (the attempt's seconds: 0, or 1 when bash's clock ticked on a loaded machine)
    said = (
        r"Ray timed out during startup after [01] s \(exit 1\): starting it again in 0 s "
        r"\(attempt 2 of 3\)"
    )
    assert re.search(said, proc.stdout), proc.stdout
    if recovers:
        assert (proc.returncode, len(starts)) == (0, 2), proc.stdout + proc.stderr
    else:
        assert (proc.returncode, len(starts)) == (START_FAILED_EXIT, jobscript.START_ATTEMPTS)
        assert "timed out during startup in all 3 attempts (the last with exit 1)" in proc.stderr


def test_a_port_another_account_took_ends_the_worker_with_its_own_status(
    make_settings, fake_ray_env, short_temp_root, tmp_path
):
    """hold-ports found one of the node's ports held by another account: the job ends with
    PORTS_TAKEN_EXIT (the provider replaces it without backing the type off), not Ray's 3."""
    env_dir, _ = fake_ray_env

    def change(cfg):
        cfg["provider"]["ray_env"] = str(env_dir)
        cfg["provider"]["temp_root"] = short_temp_root

    settings = make_settings(change)
    text = render(settings, _cluster(settings), settings.spec("cpu"), head_address=HEAD_ADDRESS)
    path = tmp_path / "node.sh"
    path.write_text(text.text)
    env = {"PATH": "/usr/bin:/bin", "SLURM_JOB_ID": "77",
           "RAY_SLURM_TEST_HOLD": str(PORTS_TAKEN_EXIT)}  # fmt: skip
    proc = subprocess.run(["bash", str(path)], env=env, capture_output=True, text=True,
                          timeout=10, check=False)  # fmt: skip
    assert proc.returncode == PORTS_TAKEN_EXIT, proc.stderr
    assert "starting it again" not in proc.stdout  # a new job picks other ports
    env["RAY_SLURM_TEST_HOLD"] = "1"  # the check failed because Ray stopped: Ray's status
    proc = subprocess.run(["bash", str(path)], env=env, capture_output=True, text=True,
                          timeout=10, check=False)  # fmt: skip
    assert proc.returncode == 3, proc.stderr


def test_ray_processes_that_outlive_ray_start_do_not_keep_the_temp_dir(
    make_settings, fake_ray_env, short_temp_root, tmp_path
):
    """Ray's raylet and workers die a moment after `ray start` and write below the temp dir
    while they do: the job ends them and still removes the directory."""
    env_dir, record = fake_ray_env
    ray = env_dir / "bin" / "ray"
    ray.write_text(f"""#!/bin/bash
for a in "$@"; do case "$a" in --temp-dir=*) d="${{a#--temp-dir=}}" ;; esac; done
mkdir -p "$d"
# a "raylet" that ignores SIGTERM and keeps writing below the temp dir
nohup bash -c 'trap "" TERM; while :; do mkdir -p "$0/logs"; touch "$0/logs/$RANDOM"; done' \
    "$d" >/dev/null 2>&1 &
echo $! > {record}/child.pid
sleep 0.3
exit 0
""")

    def change(cfg):
        cfg["provider"]["ray_env"] = str(env_dir)
        cfg["provider"]["temp_root"] = short_temp_root

    settings = make_settings(change)
    cluster = _cluster(settings)
    text = render(settings, cluster, settings.spec("cpu"), head_address=HEAD_ADDRESS).text
    proc = _run(text, tmp_path, job_id="4343")
    child = int((record / "child.pid").read_text())
    stat = Path(f"/proc/{child}/stat")
    try:
        assert proc.returncode == 0, proc.stderr
        assert os.listdir(short_temp_root) == []
        assert not stat.exists() or stat.read_text().split()[2] == "Z"  # ended (or a zombie)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(child, signal.SIGKILL)  # never left running, whatever the result


def test_a_ray_start_deaf_to_the_signal_is_killed_after_the_grace_and_cleaned_up(
    make_settings, fake_ray_env, short_temp_root, tmp_path, monkeypatch
):
    """`ray start` still starting up hears no SIGTERM (Ray 2.60 waits up to 30 s for its
    raylet): the job gives it STOP_GRACE_S, then kills it and still removes the temp dir,
    before the login backend's or SLURM's own kill would skip that."""
    monkeypatch.setattr(jobscript, "STOP_GRACE_S", {"head": 8, "worker": 1})
    env_dir, record = fake_ray_env
    (env_dir / "bin" / "ray").write_text(f"""#!/bin/bash
for a in "$@"; do case "$a" in --temp-dir=*) d="${{a#--temp-dir=}}" ;; esac; done
mkdir -p "$d/session"
trap '' TERM
echo $$ > {record}/ray.pid
while :; do sleep 0.1; done
""")

    def change(cfg):
        cfg["provider"]["ray_env"] = str(env_dir)
        cfg["provider"]["temp_root"] = short_temp_root

    settings = make_settings(change)
    text = render(settings, _cluster(settings), settings.spec("cpu"),
                  head_address=HEAD_ADDRESS).text  # fmt: skip
    proc = _start_until_ray_runs(text, tmp_path, record, {"SLURM_JOB_ID": "4545"})
    pid_file = record / "ray.pid"
    try:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=8)
        assert proc.returncode == 128 + signal.SIGTERM
        assert "Ray did not stop within 1 s of the signal: killing it" in err
        assert "starting it again" not in out  # a signalled node is never started again
        assert os.listdir(short_temp_root) == []
        ray_stat = Path(f"/proc/{int(pid_file.read_text())}/stat")
        assert not ray_stat.exists() or ray_stat.read_text().split()[2] == "Z"
    finally:
        proc.kill()
        if pid_file.exists():
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid_file.read_text()), signal.SIGKILL)


@pytest.mark.parametrize("ends", ["idle", "deadline"])
def test_usr1_drains_the_worker_then_stops_ray_once_idle_or_at_the_deadline(
    make_settings, fake_ray_env, short_temp_root, tmp_path, ends
):
    """USR1 (the time limit's warning, a preemption, a roll-over): `ray-slurm drain` asks the
    GCS to drain the node and prints the deadline; the script keeps Ray until its raylet, idle,
    has left (Ray's `ray start --block` would wait on forever) or the deadline comes, then stops
    it, and the job ends 0 (COMPLETED) before SLURM's kill. A second USR1 changes nothing."""
    env_dir, record = fake_ray_env
    raylet = env_dir / "bin" / "raylet"  # leaves when told the node is idle
    raylet.write_text(f"#!/bin/bash\nuntil [ -e {record}/idle ]; do sleep 0.05; done\n")
    raylet.chmod(0o755)
    (env_dir / "bin" / "ray").write_text(f"""#!/bin/bash
for a in "$@"; do case "$a" in --temp-dir=*) d="${{a#--temp-dir=}}" ;; esac; done
{raylet} --raylet_socket_name="$d/session/sockets/raylet" &
trap 'echo stopped > {record}/ray.stopped; exit 0' TERM
until pgrep -f "raylet --raylet_socket_name=$d/" >/dev/null; do sleep 0.02; done
echo $$ > {record}/ray.pid
while :; do sleep 0.05; done
""")

    def change(cfg):
        cfg["provider"]["ray_env"] = str(env_dir)
        cfg["provider"]["temp_root"] = short_temp_root

    settings = make_settings(change)
    cluster = _cluster(settings)
    text = render(settings, cluster, settings.spec("cpu"), head_address=HEAD_ADDRESS).text
    drain_s = "60" if ends == "idle" else "3"  # (the fake `ray-slurm drain`'s deadline)
    proc = _start_until_ray_runs(
        text, tmp_path, record, {"SLURM_JOB_ID": "4646", "RAY_SLURM_TEST_DRAIN_S": drain_s}
    )
    try:
        proc.send_signal(signal.SIGUSR1)
        time.sleep(0.5)
        proc.send_signal(signal.SIGUSR1)  # SLURM's warning after the roll-over's: no second drain
        time.sleep(0.5)
        assert proc.poll() is None  # draining: Ray goes on while its raylet works
        if ends == "idle":
            (record / "idle").touch()
        out, err = proc.communicate(timeout=10)
    finally:
        proc.kill()
        (record / "idle").touch()  # (the raylet of the deadline's case)
    assert proc.returncode == 0, out + err  # left before its limit, as planned
    drains = [c for c in (record / "ray-slurm.calls").read_text().splitlines()
              if c.startswith("drain")]  # fmt: skip
    assert drains == [f"drain {cluster.root} --address {HEAD_ADDRESS} --warning 90"]
    assert "SIGUSR1 at" in out and "draining this node" in out
    said = {"idle": "the drained node had no work left", "deadline": "the drain's deadline came"}
    assert said[ends] in out, out
    assert (record / "ray.stopped").exists()
    assert os.listdir(short_temp_root) == []


def test_a_head_that_waits_for_its_loop_leaves_the_gcs_pull_as_ray_has_it(make_settings, cluster):
    settings = make_settings(lambda cfg: cfg["provider"].update(demand_poll_ms=0))
    text = render(
        settings,
        cluster,
        settings.spec("head"),
        node_ip="10.0.0.9",
        identity=login_identity(settings, cluster),
    ).text
    assert "export AUTOSCALER_UPDATE_INTERVAL_S=1" in text.splitlines()
    assert "gcs_pull_resource_loads" not in text


def test_metrics_are_off_unless_the_site_opens_them(make_settings, fake_ray_env, short_temp_root,
                                                    tmp_path):  # fmt: skip
    """The metrics export port answers anyone without token or TLS: closed by default; a site
    that scrapes it sets provider.metrics_export, and then hold-ports checks that port too."""
    env_dir, record = fake_ray_env

    def script(metrics: bool | None) -> str:
        def change(cfg):
            cfg["provider"].update(ray_env=str(env_dir), temp_root=short_temp_root)
            if metrics is not None:
                cfg["provider"]["metrics_export"] = metrics

        settings = make_settings(change)
        spec = settings.spec("cpu")
        return render(settings, _cluster(settings), spec, head_address=HEAD_ADDRESS).text

    assert "export RAY_enable_metrics_collection=0" in script(None)
    assert "--metrics-port" not in script(None)
    opened = script(True)
    assert "RAY_enable_metrics_collection" not in opened
    _run(opened, tmp_path, job_id="4545")
    hold = (record / "ray-slurm.calls").read_text().splitlines()[-1]
    assert hold.startswith("hold-ports ") and hold.endswith(
        "--agent-ports 25001 25002 25004 --metrics-port 25003"
    )
