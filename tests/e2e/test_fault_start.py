"""Issue #11 part 2: jobs that die at start. The fault is real: the worker type's setup line
exits 3 in the job, as a failing `module load` would; SLURM ends the job FAILED in seconds."""

import time

import yaml
from conftest import parse_result, start_driver, wait_for

from ray_slurm.backends.slurm.jobscript import parse_job_name

FAILING_SETUP = ["echo loading the site modules",
                 "sh -c 'echo module nosuch: not found >&2; exit 3'"]  # fmt: skip


def with_setup(lines):
    def change(cfg):
        cpu = cfg["available_node_types"]["cpu"]
        cpu["min_workers"] = 1
        cpu["node_config"]["setup"] = lines

    return change


def worker_jobs_ever(cluster) -> set[str]:
    """Every worker job of the cluster SLURM still knows, ended ones included."""
    return {j.job_id for j in cluster.user.jobs()
            if (parse_job_name(j.name, cluster.name) or ("",))[0] == "worker"}  # fmt: skip


def test_a_worker_that_dies_at_start_is_retried_with_backoff_until_its_yaml_is_fixed(make_cluster):
    cluster = make_cluster("f-dies", max_workers=1, change=with_setup(FAILING_SETUP))
    cluster.up()
    started = time.monotonic()
    submitted: set[str] = set()

    def failure_shown():
        submitted.update(worker_jobs_ever(cluster))
        status = cluster.status()
        return "node type cpu failed" in status and status

    # ray-slurm status: SLURM's state and exit code, and the failing line from the job's log.
    status = wait_for(failure_shown, 60, "the failure in ray-slurm status")
    assert "ended FAILED (exit code 3:0)" in status, status
    assert "module nosuch: not found" in status and "+ sh -c" in status, status
    # Ray's own failure list shows it; the launch does not wait as "launching".
    ray_status = wait_for(lambda: "cpu: LaunchFailed" in (out := cluster.exec("ray status").stdout)
                          and out, 60, "LaunchFailed in ray status")  # fmt: skip
    assert "Recent failures" in ray_status
    assert "ended FAILED (exit code 3:0)" in cluster.autoscaler_log()

    # A few submissions, backed off exponentially (30 s, 60 s, ...): not one, not dozens.
    while time.monotonic() - started < 110:
        submitted.update(worker_jobs_ever(cluster))
        time.sleep(3)
    assert 2 <= len(submitted) <= 4, f"{len(submitted)} jobs in 110 s: {sorted(submitted)}"
    log = cluster.autoscaler_log()
    assert "backed off" in log or "one node at a time" in log

    # Fixing the yaml and running `ray up` again recovers: the changed type is tried at once.
    cfg = yaml.safe_load(cluster.config_path.read_text())
    cfg["available_node_types"]["cpu"]["node_config"]["setup"] = ["echo loading the site modules"]
    cluster.user.write(cluster.config_path, yaml.safe_dump(cfg))
    cluster.up()
    fixed = time.monotonic()
    driver = start_driver(cluster, tasks=1, seconds=1)
    out, err = driver.communicate(timeout=240)
    assert driver.returncode == 0, err[-3000:]
    assert len(parse_result(out)) == 1
    assert time.monotonic() - fixed < 90, "the fixed type waited out the old back-off"
    assert "node type cpu failed" not in wait_for(
        lambda: "failed" not in (s := cluster.status()) and s, 150, "the failure record to clear"
    )
    cluster.down()
