"""The scale-up benchmark's driver: runs on the login node with the cluster's driver environment.

Each round measures, on the same running cluster:
  floor     a bare job (sbatch of a plain script running `ray start --address ... --block`, with
            the node's TLS certificate made as every node of the cluster makes it):
            submit -> RUNNING (squeue), RUNNING -> its CPU in ray.cluster_resources();
            then it is cancelled and its CPU has left the cluster
  provider  a task needing a CPU the cluster lacks: .remote() -> the task runs on a new SLURM
            worker the autoscaler started; phases from polling squeue and the cluster's CPUs;
            the PSS of the head's process tree and of the worker job's processes meanwhile;
            then the idle worker is cancelled by the autoscaler (idle_timeout_minutes)
Prints one line ``RESULT {json}``.
"""

from __future__ import annotations

import datetime
import glob
import itertools
import json
import os
import shlex
import socket
import sys
import threading
import time
from pathlib import Path

import ray

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import job_processes, process_tree, pss_by_component, pss_kib  # noqa: E402
from support.jobs import job_state  # noqa: E402
from support.procs import wait_for  # noqa: E402

from ray_slurm.backends.nodes import JobState  # noqa: E402
from ray_slurm.backends.slurm.client import Slurm  # noqa: E402
from ray_slurm.backends.slurm.jobscript import START_TIMEOUT_SAID, parse_job_name  # noqa: E402

P = json.loads(sys.argv[1])
slurm = Slurm()


# How often the measuring loops look (squeue; the cluster's CPUs from the GCS). Each look costs
# the 2 cores the join runs on (squeue polled at 50 Hz through a join competed with it). Both
# the floor and the provider are watched alike, squeue only until the job runs.
POLL_S = 0.05


def cpus() -> float:
    return ray.cluster_resources().get("CPU", 0.0)


# Every port of a node's agents given, none left to the agents to pick: the raylet then need
# not wait for the dashboard agent to start and write its ports (NodeManager::
# WaitForDashboardAgentPorts) before it registers. Measured next to Ray's defaults.
ALL_AGENT_PORTS = (
    " --dashboard-agent-grpc-port=$((agent_port + 1)) --metrics-export-port=$((agent_port + 2))"
    " --runtime-env-agent-port=$((agent_port + 3))"
)


def floor_script(path: Path, all_agent_ports: bool = False) -> None:
    """A plain job script: what any user would write to add a Ray worker by hand; with
    ``all_agent_ports``, the same with every agent port given (4 ports from one base)."""
    # below the kernel's ephemeral ports (32768+), where other processes' random ports could
    # already hold one of the four (the raylet then dies at start)
    base = "24000 + SLURM_JOB_ID % 2000 * 4" if all_agent_ports else "24000 + SLURM_JOB_ID % 8000"
    more = ALL_AGENT_PORTS if all_agent_ports else ""
    cases = " ".join(f"{n}) ip={ip};;" for n, ip in P["node_addrs"].items())
    ray_bin = shlex.quote(P["ray"])
    python = shlex.quote(str(Path(P["ray"]).with_name("python")))
    ca_file = shlex.quote(P["ca_file"])
    path.write_text(f"""#!/bin/bash
#SBATCH --job-name=bench.floor
#SBATCH --output={P["workdir"]}/floor-%j.log
#SBATCH --partition={P["partition"]}
#SBATCH --nodes=1
#SBATCH --ntasks=1
#SBATCH --cpus-per-task={P["cpus"]}
#SBATCH --mem={P["memory_mb"]}M
export RAY_AUTH_MODE=token RAY_AUTH_TOKEN_PATH={shlex.quote(P["token"])} RAY_USAGE_STATS_ENABLED=0
stamps={P["workdir"]}/floor-$SLURM_JOB_ID.times
echo "job_start $(date +%s.%N)" > "$stamps"
case "$SLURMD_NODENAME" in {cases} esac
tmp=/tmp/rb-$SLURM_JOB_ID
mkdir -p -m 700 "$tmp"
trap 'rm -rf "$tmp"' EXIT
# the cluster speaks TLS: a node needs a certificate of its CA for its address, as any node
RAY_SLURM_TLS_CA="$(cat {ca_file})" {python} -m ray_slurm.host.tls --out "$tmp" --ip "$ip"
export RAY_USE_TLS=1 RAY_TLS_SERVER_CERT="$tmp/tls.crt" RAY_TLS_SERVER_KEY="$tmp/tls.key" \
    RAY_TLS_CA_CERT="$tmp/ca.crt"
agent_port=$(({base}))
echo "ray_start $(date +%s.%N)" >> "$stamps"
# As the provider's job script does: a `ray start` that timed out registering (its raylet missed
# Ray's 30 s, at a scale-out of many nodes at once) runs again in the allocation, 3 tries.
for attempt in 1 2 3; do
started=$SECONDS
{ray_bin} start --address={P["address"]} --node-ip-address="$ip" --temp-dir="$tmp" \\
    --num-cpus={P["cpus"]} --memory={P["ray_memory"]} --object-store-memory={P["object_store"]} \\
    --dashboard-agent-listen-port=$agent_port{more} --disable-usage-stats --block \\
    2> >(tee "$tmp/start.err" >&2) &
pid=$!
trap 'stopped=1; kill -TERM "$pid" 2>/dev/null' TERM
status=0
wait "$pid" || status=$?; while kill -0 "$pid" 2>/dev/null; do wait "$pid" || status=$?; done
sleep 0.3  # (tee's last lines)
{{ [ -z "$stopped" ] && [ "$status" != 0 ] && [ $((SECONDS - started)) -lt 120 ] \\
  && grep -qF {shlex.quote(START_TIMEOUT_SAID)} "$tmp/start.err"; }} || break
echo "ray_retry $(date +%s.%N)" >> "$stamps"
pkill -KILL -u "$(id -u)" -f -- "$tmp/"; sleep $((5 * attempt + RANDOM % 6))
done
exit "$status"
""")


# Lines of a new node's raylet.out that mark its start-up, by what happened.
RAYLET_MARKS = {
    "raylet_started": "main.cc",  # its first line
    "agents_spawned": "Monitor agent process with name runtime_env_agent",
    "metrics_agent_ready": "Initializing exporter",
    "raylet_ready": "started. Raylet consists of",
}


def log_time(line: str) -> float:
    """The time of a Ray C++ log line ``[2026-12-04 20:55:16,500 I ...``: this machine's clock."""
    stamp = datetime.datetime.strptime(line[1:24], "%Y-%m-%d %H:%M:%S,%f")
    return stamp.timestamp()


def join_parts(job_id: str, t_running: float, t_cpu: float) -> dict[str, float]:
    """Where the bare join's time goes: the job script's own stamps, the raylet's log lines,
    and the head seeing the node's CPU. Each part ends when the next begins."""
    marks: dict[str, float] = {}
    stamps = Path(P["workdir"]) / f"floor-{job_id}.times"
    for line in stamps.read_text().splitlines():
        name, value = line.split()
        marks[name] = float(value)
    # The newest session: a job id of an earlier run of the site (ids start again at each `up`)
    # left its own session in the same temp dir, with an earlier day's times.
    logs = sorted(glob.glob(f"/tmp/rb-{job_id}/session_*/logs/raylet.out"), key=os.path.getmtime)
    if logs:
        lines = Path(logs[-1]).read_text().splitlines()
        for name, needle in RAYLET_MARKS.items():
            hit = next((ln for ln in lines if needle in ln and ln.startswith("[")), None)
            if hit:
                marks[name] = log_time(hit)
    order = ["job_start", "ray_start", "raylet_started", "agents_spawned",
             "metrics_agent_ready", "raylet_ready"]  # fmt: skip
    times = [("running", t_running)] + [(n, marks[n]) for n in order if n in marks]
    times.append(("cpu_at_head", t_cpu))
    pairs = itertools.pairwise(times)
    return {f"{a}->{b}": round(tb - ta, 3) for (a, ta), (b, tb) in pairs}


def measure_floor(script: Path) -> dict[str, float]:
    t0 = time.time()
    job_id = slurm.sbatch(str(script))
    t_running = None
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if t_running is None and job_state(job_id) == "RUNNING":
            t_running = time.time()
        if t_running is not None and cpus() >= P["cpus"]:
            t_cpu = time.time()
            break
        time.sleep(POLL_S)
    else:
        slurm.scancel([job_id])
        raise TimeoutError(f"bare ray start job {job_id} did not join within 120 s")
    parts = join_parts(job_id, t_running, t_cpu)
    slurm.scancel([job_id])
    wait_for(
        lambda: cpus() == 0 and job_state(job_id) not in ("RUNNING", "COMPLETING"),
        120,
        "the bare worker to leave",
        0.2,
    )
    return {
        "submit_to_running_s": t_running - t0,
        "join_s": t_cpu - t_running,
        "floor_s": t_cpu - t0,
        "join_parts": parts,
    }


def worker_jobs() -> list:
    return [
        j
        for j in slurm.squeue()
        if (o := parse_job_name(j.name, P["cluster"]))
        and o[0] == "worker"
        and j.state is not JobState.GONE
    ]


class Watcher(threading.Thread):
    """Polls squeue and the cluster's CPUs: when the worker job appeared, ran, joined."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.stop = threading.Event()
        self.seen = self.running = self.joined = None
        self.job_id = ""

    def run(self) -> None:
        while not self.stop.is_set() and self.joined is None:
            if self.running is None:
                now = time.time()
                jobs = worker_jobs()
                if jobs and self.seen is None:
                    self.seen, self.job_id = now, jobs[0].job_id
                if any(j.state is JobState.RUNNING for j in jobs):
                    self.running = now
            elif cpus() >= P["cpus"]:
                self.joined = time.time()
            time.sleep(POLL_S)


def process_started() -> float:
    """When this process started (epoch seconds, from /proc: boot time + its start tick)."""
    with open("/proc/stat") as stat:
        boot = next(float(line.split()[1]) for line in stat if line.startswith("btime "))
    with open("/proc/self/stat") as mine:
        ticks = float(mine.read().rsplit(")", 1)[1].split()[19])
    return boot + ticks / os.sysconf("SC_CLK_TCK")


@ray.remote(num_cpus=1)
def where() -> tuple[float, str, float]:
    return time.time(), socket.gethostname(), process_started()


def measure_provider() -> dict[str, float]:
    watcher = Watcher()
    watcher.start()
    t0 = time.time()
    started, host, worker_started = ray.get(where.remote(), timeout=300)
    watcher.stop.set()
    watcher.join(5)
    result = {"latency_s": started - t0, "host": host}
    if watcher.seen and watcher.running and watcher.joined:
        result.update(
            demand_to_submit_s=watcher.seen - t0,
            submit_to_running_s=watcher.running - watcher.seen,
            running_to_join_s=watcher.joined - watcher.running,
            join_to_task_s=started - watcher.joined,
            # of which: until Ray's worker process for the task started; that process to the task
            join_to_worker_process_s=worker_started - watcher.joined,
            worker_process_to_task_s=started - worker_started,
        )
    # Memory while the worker is up and has run a task: the product's defaults.
    head = process_tree(P["head_pid"])
    result["head_pss_mib"] = pss_kib(head) / 1024
    result["head_pss_by_component"] = pss_by_component(head)
    if watcher.job_id:
        worker = job_processes(watcher.job_id)
        result["worker_pss_mib"] = pss_kib(worker) / 1024
        result["worker_pss_by_component"] = pss_by_component(worker)
    # The idle worker is cancelled by the autoscaler before the next round.
    wait_for(lambda: not worker_jobs() and cpus() == 0, 240, "the idle worker to be cancelled", 1)
    return result


def main() -> None:
    ray.init(logging_level="ERROR")
    wait_for(lambda: cpus() == 0 and not worker_jobs(), 240, "a cluster without workers", 1)
    script = Path(P["workdir"]) / "floor.sh"
    floor_script(script)
    ports_script = Path(P["workdir"]) / "floor-all-agent-ports.sh"
    floor_script(ports_script, all_agent_ports=True)
    rounds = []
    for i in range(P["runs"]):
        floor = measure_floor(script)
        floor_ports = measure_floor(ports_script)
        provider = measure_provider()
        rounds.append({"floor": floor, "floor_all_agent_ports": floor_ports, "provider": provider})
        print(
            f"round {i + 1}: floor {floor['floor_s']:.2f} s, provider "
            f"{provider['latency_s']:.2f} s",
            file=sys.stderr,
            flush=True,
        )
    print("RESULT " + json.dumps({"rounds": rounds}))


if __name__ == "__main__":
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    main()
