"""Command runners: `ray stop` goes to the provider, commands run in bash with exported
variables and a clean environment, "rsync" is a local copy into the cluster's home."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from ray.autoscaler._private.subprocess_output_util import ProcessRunnerError

from ray_slurm.backends.command_runner import (
    EXEC_STOP_SUFFIX,
    CommandRefused,
    LocalCommandRunner,
    SrunCommandRunner,
    is_ray_stop,
)
from ray_slurm.host.private import user_name


class NoProcesses:
    """A process runner that fails the test if anything is run."""

    def check_call(self, *args, **kwargs):
        raise AssertionError(f"nothing may run, got {args}")

    check_output = check_call


@pytest.fixture
def home(tmp_path):
    path = tmp_path / "home"
    path.mkdir()
    return path


@pytest.fixture
def stops():
    return []


@pytest.fixture
def runner(home, stops):
    return LocalCommandRunner(
        log_prefix="test: ",
        home=str(home),
        env={"RUNNER_VAR": "it's a value with spaces"},
        stop_ray=lambda: stops.append(1),
        stop_cluster=lambda: stops.append("cluster"),
    )


@pytest.mark.parametrize(
    ("cmd", "expected"),
    [
        ("ray stop", True),
        ("ray stop --force", True),
        ("/x/bin/ray stop", True),
        ("  ray   stop  ", True),
        ("ray status", False),
        ("ray start --head", False),
        ("ray", False),
        ("echo ray stop", False),
        ("ray-slurm stop", False),
        ("ray stop && echo x", False),
        ("ray stop 'unbalanced", False),
        ("", False),
        (None, False),
    ],
)
def test_is_ray_stop(cmd, expected):
    assert is_ray_stop(cmd) is expected


@pytest.mark.parametrize("cmd", ["ray stop; echo x", "echo x && ray stop", "(ray stop --force)"])
def test_ray_stop_inside_a_longer_command_is_refused(runner, cmd, tmp_path):
    marker = tmp_path / "ran"
    with pytest.raises(ProcessRunnerError, match="ray stop"):
        runner.run(f"{cmd}; touch {marker}")
    assert not marker.exists()


def test_ray_stop_calls_the_provider_and_runs_nothing(home, stops):
    runner = LocalCommandRunner(
        "",
        str(home),
        {},
        lambda: stops.append(1),
        NoProcesses(),
        stop_cluster=lambda: stops.append("cluster"),
    )
    assert runner.run("ray stop") == ""
    assert runner.run("ray stop --force", with_output=True) == ""
    assert stops == [1, 1]


def test_environment_variables_are_exported(runner):
    runner.run('test "$FOO" = bar', environment_variables={"FOO": "bar"})
    with pytest.raises(ProcessRunnerError):
        runner.run('test "$FOO" = bar', environment_variables={"FOO": "baz"})


def test_runner_env_is_exported_and_quoted(runner):
    out = runner.run('printf %s "$RUNNER_VAR"', with_output=True)
    assert out == "it's a value with spaces"


def test_environment_variables_override_runner_env(runner):
    out = runner.run(
        'printf %s "$RUNNER_VAR"', with_output=True, environment_variables={"RUNNER_VAR": 5}
    )
    assert out == "5"


def test_commands_run_in_the_clusters_directory_not_the_callers(runner, home, monkeypatch):
    """Python puts the working directory on sys.path: `ray exec` typed in /tmp must not run
    there (a module another account planted would be imported)."""
    monkeypatch.chdir("/tmp")
    assert runner.run("pwd", with_output=True) == f"{home}\n"


def test_with_output_returns_stdout(runner):
    out = runner.run("echo hello; echo err >&2", with_output=True)
    assert out == "hello\n"
    assert isinstance(out, str)


def test_commands_run_in_a_clean_environment(runner, monkeypatch):
    monkeypatch.setenv("SLURM_JOB_ID", "77")
    monkeypatch.setenv("RAY_CLOUD_INSTANCE_ID", "77")
    out = runner.run(
        'echo "${SLURM_JOB_ID:-none} ${RAY_CLOUD_INSTANCE_ID:-none}"', with_output=True
    )
    assert out == "none none\n"


def test_failing_command_raises(runner):
    with pytest.raises(ProcessRunnerError) as excinfo:
        runner.run("exit 7")
    assert excinfo.value.code == 7
    with pytest.raises(ProcessRunnerError):
        runner.run("exit 3", with_output=True)


def test_exit_on_fail_exits_with_the_code(runner):
    with pytest.raises(SystemExit) as excinfo:
        runner.run("exit 5", exit_on_fail=True)
    assert excinfo.value.code == 5


def test_with_output_timeout_raises(runner):
    with pytest.raises(ProcessRunnerError):
        runner.run("exec sleep 5", with_output=True, timeout=0.3)


def test_rsync_up_keeps_rays_own_files_per_cluster(runner, home, tmp_path):
    source = tmp_path / "cfg.yaml"
    source.write_text("cluster_name: example\n")
    runner.run_rsync_up(str(source), "~/ray_bootstrap_config.yaml")
    assert (home / "ray_bootstrap_config.yaml").read_text() == "cluster_name: example\n"


def test_rsync_up_to_home_is_the_home_the_commands_see(runner, home, tmp_path):
    """`ray submit`/`ray rsync-up f ~/f` then `ray exec 'cat ~/f'`: one meaning of ~."""
    source = tmp_path / "job.py"
    source.write_text("print('hi')\n")
    runner.run_rsync_up(str(source), "~/job.py")
    real_home = Path(os.environ["HOME"])
    assert (real_home / "job.py").read_text() == "print('hi')\n"
    runner.run_rsync_up(str(source), "~/sub/dir/")
    assert (real_home / "sub" / "dir" / "job.py").exists()
    assert not (home / "job.py").exists()


def test_rsync_up_directory_and_absolute_target(runner, tmp_path):
    source = tmp_path / "src"
    (source / "a").mkdir(parents=True)
    (source / "a" / "f.txt").write_text("x")
    target = tmp_path / "dst"
    runner.run_rsync_up(str(source), str(target))
    assert (target / "a" / "f.txt").read_text() == "x"


def test_rsync_down_maps_home(runner, home, tmp_path):
    (home / "ray_bootstrap_config.yaml").write_text("a: 1\n")
    target = tmp_path / "down.yaml"
    runner.run_rsync_down("~/ray_bootstrap_config.yaml", str(target))
    assert target.read_text() == "a: 1\n"


def test_local_remote_shell(runner):
    assert runner.remote_shell_command_str() == "bash\n"


# ------------------------------------------------------------------------------------- srun


def _srun_runner(home, srun, stops=None, process_runner=subprocess, not_ready=lambda: None):
    return SrunCommandRunner(
        job_id="4242",
        srun=srun,
        not_ready=not_ready,
        log_prefix="",
        home=str(home),
        env={},
        stop_ray=lambda: (stops if stops is not None else []).append(1),
        stop_cluster=lambda: (stops if stops is not None else []).append("cluster"),
        process_runner=process_runner,
    )


def test_srun_wrap(home):
    runner = _srun_runner(home, "/opt/slurm/bin/srun")
    argv = runner.wrap(["bash", "-c", "hostname"])
    assert argv[:3] == ["/opt/slurm/bin/srun", "--jobid=4242", "--overlap"]
    assert "--nodes=1" in argv
    assert "--ntasks=1" in argv
    assert argv[-3:] == ["bash", "-c", "hostname"]
    shell = runner.remote_shell_command_str()
    assert shell == "/opt/slurm/bin/srun --jobid=4242 --overlap --pty bash\n"


def test_srun_runner_runs_inside_the_job(home, fake_bin, tmp_path):
    record = tmp_path / "srun.args"
    srun = fake_bin(
        "srun",
        f'printf "%s\\n" "$@" > {record}\nwhile [ "$1" != bash ]; do shift; done\nexec "$@"',
    )
    runner = _srun_runner(home, str(srun))
    assert runner.run("echo inside", with_output=True) == "inside\n"
    args = record.read_text().splitlines()
    assert args[:2] == ["--jobid=4242", "--overlap"]
    assert args[-1].endswith("echo inside")


def test_srun_runner_hands_ray_stop_to_the_provider(home):
    stops = []
    runner = _srun_runner(home, "/nonexistent/srun", stops, NoProcesses())
    runner.run("ray stop")
    assert stops == [1]


def test_srun_runner_on_a_job_that_does_not_run_yet(home, capsys):
    def not_ready():
        return "pending (Priority)"

    runner = _srun_runner(home, "/nonexistent/srun", None, NoProcesses(), not_ready)
    with pytest.raises(ProcessRunnerError) as excinfo:
        runner.run("uptime")
    message = str(excinfo.value)
    assert "4242" in message
    assert "pending (Priority)" in message
    assert "ssh_timeout" in message  # Ray's updater treats it as "not reachable yet" and retries
    assert "pending (Priority)" in capsys.readouterr().err


def test_ray_stop_of_a_pending_job_still_reaches_the_provider(home):
    stops = []
    runner = _srun_runner(home, "/nonexistent/srun", stops, NoProcesses(), lambda: "pending (x)")
    assert runner.run("ray stop") == ""
    assert stops == [1]


def test_local_runner_is_always_ready(runner):
    runner.check_ready()


# ------------------------------------------------------------- Ray's other commands


def test_exec_stop_runs_the_command_then_stops_the_cluster(runner, stops, tmp_path):
    """`ray exec --stop`: Ray appends `ray stop; ray teardown ...; sudo shutdown -h now`."""
    marker = tmp_path / "ran"
    runner.run(f"touch {marker}" + EXEC_STOP_SUFFIX)
    assert marker.exists() and stops == ["cluster"]
    with pytest.raises(SystemExit):  # a failing command stops the cluster too
        runner.run("exit 4" + EXEC_STOP_SUFFIX, exit_on_fail=True)
    assert stops == ["cluster", "cluster"]


def test_dashboard_prints_the_ssh_line_and_opens_no_shell(home, stops, capsys):
    runner = LocalCommandRunner("", str(home), {}, lambda: stops.append(1), NoProcesses(),
                                stop_cluster=lambda: None, dashboard="10.77.0.1:24123")  # fmt: skip
    assert runner.run(None, port_forward=[(8265, 8265)]) == ""
    out = capsys.readouterr().out
    assert "http://10.77.0.1:24123" in out
    assert f"ssh -N -L 8265:10.77.0.1:24123 {user_name()}@" in out
    without_head = LocalCommandRunner("", str(home), {}, lambda: None, stop_cluster=lambda: None)
    with pytest.raises(CommandRefused, match="no running head"):
        without_head.run(None, port_forward=[(8265, 8265)])


def test_ray_session_hint_means_the_heads_own_session(home, tmp_path):
    session = tmp_path / "rs-h1.X" / "r" / "session_latest"
    (session / "logs").mkdir(parents=True)
    (session / "logs" / "monitor.log").write_text("autoscaler here\n")
    runner = LocalCommandRunner("", str(home), {}, lambda: None, stop_cluster=lambda: None,
                                session_dir=str(session))  # fmt: skip
    out = runner.run("tail -n 1 /tmp/ray/session_latest/logs/monitor*", with_output=True)
    assert out == "autoscaler here\n"


def test_screen_and_tmux_need_the_tool_and_are_refused_in_a_job(runner, home, monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(CommandRefused, match="screen is not installed"):
        runner.run("screen -L -dm bash -c 'echo x; exec bash'")
    with pytest.raises(CommandRefused, match="--tmux keeps a session .* job step"):
        _srun_runner(home, "srun").run("tmux new -d bash -c 'echo x; exec bash'")
