"""Run a command (an ansible-playbook run) and kill it when its output shows a marker.

    python interrupt.py MARKER -- ansible-playbook ...

SIGKILLs the command's whole process group (Ansible's workers and the modules they run) as
soon as an output line contains MARKER (a task's banner: the task has started, its work is not
done), the way a lost session or a dead controller stops a run half-way. Exits 0 if the command
was killed there, 1 if it ended first.
"""

import os
import signal
import subprocess
import sys


def main() -> int:
    marker, command = sys.argv[1], sys.argv[sys.argv.index("--") + 1 :]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "ANSIBLE_FORCE_COLOR": "0"}
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, env=env, start_new_session=True)  # fmt: skip
    for line in proc.stdout:
        print(line, end="", flush=True)
        if marker in line:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            print(f"INTERRUPTED: killed the run at {marker!r} (exit {proc.returncode})")
            return 0
    proc.wait()
    print(f"NOT INTERRUPTED: the run ended (exit {proc.returncode}) before {marker!r}")
    return 1


if __name__ == "__main__":
    sys.exit(main())
