"""Issue #28: a preempted worker is drained through Ray, replaced, and not held against its type.

On campus24 (Slurm 24.11) the `scavenger` partition is preempted by the others with
`PreemptParameters=send_user_signal` and a GraceTime of 30 s: at preemption SLURM sends the job
its own `--signal` (USR1). The job reads from SLURM that it was preempted and when it is killed,
asks Ray's GCS to drain its node with the preemption reason until just before then, and leaves
before SLURM's kill. Its tasks are retried on the replacement Ray asks for; the type is not
backed off; nothing is left over.
"""

from __future__ import annotations

from conftest import BOB, run, start_driver, wait_for
from support.drivers import parse_result


def running_workers(cluster) -> list:
    return [j for j in cluster.jobs("worker") if j.slurm_state == "RUNNING"]


def test_a_preempted_worker_drains_with_the_preemption_reason_and_is_replaced(make_cluster):
    config = run(["scontrol", "show", "config"]).stdout
    assert "send_user_signal" in config, "a site with PreemptParameters=send_user_signal (campus24)"

    def scavenger(cfg):
        cfg["available_node_types"]["cpu"]["node_config"]["partition"] = "scavenger"

    cluster = make_cluster("p-drain", max_workers=1, change=scavenger)
    cluster.up()
    driver = start_driver(cluster, tasks=2, seconds=45, cpus=1)  # both on one 2-CPU worker
    try:
        worker = wait_for(lambda: (running_workers(cluster) or [None])[0], 120, "the worker")
        log = cluster.state_dir / "logs" / f"ray.p-drain.worker.cpu-{worker.job_id}.log"
        wait_for(lambda: log.exists() and "Ray runtime started" in log.read_text(), 90,
                 f"job {worker.job_id} to join")  # fmt: skip
        submitted = BOB.run(["sbatch", "--parsable", "-p", "debug", f"--nodelist={worker.node}",
                             "-c", "2", "--mem=1000M", "--wrap", "sleep 300"])  # fmt: skip
        urgent = submitted.stdout.strip()
        try:
            wait_for(lambda: "running tasks have until" in log.read_text(), 60,
                     "the preempted job to drain its Ray node")  # fmt: skip
            text = log.read_text()
            assert "SIGUSR1 at" in text and f"SLURM preempted job {worker.job_id}" in text, text
            wait_for(lambda: worker.job_id not in {j.job_id for j in cluster.jobs("worker")
                                                   if j.slurm_state == "RUNNING"}, 90,
                     "the preempted job to leave")  # fmt: skip
            assert "did not stop within" not in log.read_text()
            replacement = wait_for(
                lambda: [j for j in running_workers(cluster) if j.job_id != worker.job_id],
                240,
                "a replacement worker on another node",
            )[0]
            assert replacement.node != worker.node
            out, err = driver.communicate(timeout=300)
            assert driver.returncode == 0, err[-3000:]
            # both tasks finished, retried on the replacement (they could not end in 10 s)
            assert [host for host, _ in parse_result(out)] == [replacement.node] * 2
        finally:
            run(["scancel", urgent], timeout=30)
        status = cluster.status()
        assert "node type cpu failed" not in status, status  # preemption is no failure
    finally:
        driver.kill()
    cluster.down()
