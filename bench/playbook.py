"""d. Playbook: first and second run of playbooks/site.yml against inventories/localsite.

Each pair deploys into fresh directories (``site_shared_dir``, ``provider_wheel_dir`` set with
``-e``), so the first run really writes everything; the second must change nothing.
"""

from __future__ import annotations

import os
import re
import subprocess
import time
from pathlib import Path
from typing import Any

from common import BIN, REPO, log, median

PLAYBOOK = REPO / "playbooks" / "site.yml"
INVENTORY = REPO / "inventories" / "localsite"


def play(workdir: Path) -> tuple[float, int, int, str]:
    """One run: (wall s, changed, failed+unreachable, output tail)."""
    env = {
        **os.environ,
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_FORCE_COLOR": "0",
        "PATH": f"{BIN}:{os.environ['PATH']}",
    }
    args = [
        str(BIN / "ansible-playbook"),
        "-i",
        str(INVENTORY),
        str(PLAYBOOK),
        "-e",
        f"site_shared_dir={workdir}/shared",
        "-e",
        f"provider_wheel_dir={workdir}/wheels",
    ]
    t0 = time.monotonic()
    proc = subprocess.run(
        args, cwd=REPO, env=env, capture_output=True, text=True, timeout=900, check=False
    )
    wall = time.monotonic() - t0
    recap = re.findall(r"changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", proc.stdout)
    if proc.returncode != 0 or not recap:
        tail = " | ".join((proc.stdout + proc.stderr).strip().splitlines()[-6:])
        raise RuntimeError(f"ansible-playbook exited {proc.returncode}: {tail[-600:]}")
    changed = sum(int(c) for c, _, _ in recap)
    bad = sum(int(u) + int(f) for _, u, f in recap)
    return wall, changed, bad, proc.stdout[-2000:]


def measure(workdir: Path, runs: int) -> dict[str, Any]:
    if not PLAYBOOK.exists():
        return {"available": False, "why": f"{PLAYBOOK.relative_to(REPO)} does not exist"}
    pairs = []
    for i in range(runs):
        target = workdir / f"deploy-{i}"
        target.mkdir(parents=True)
        try:
            first = play(target)
            second = play(target)
        except (RuntimeError, subprocess.TimeoutExpired) as exc:
            return {"available": False, "why": f"the playbook failed: {exc}"}
        pairs.append(
            {
                "first_s": first[0],
                "first_changed": first[1],
                "second_s": second[0],
                "second_changed": second[1],
            }
        )
        log(
            f"playbook: first {first[0]:.1f} s changed={first[1]}, "
            f"second {second[0]:.1f} s changed={second[1]}"
        )
    second_changed = max(p["second_changed"] for p in pairs)
    return {
        "available": True,
        "runs": len(pairs),
        "first_s": median([p["first_s"] for p in pairs]),
        "first_changed": median([p["first_changed"] for p in pairs]),
        "second_s": median([p["second_s"] for p in pairs]),
        "second_changed": second_changed,
        "ok": second_changed == 0,
        "why": "" if second_changed == 0 else "the second run changed something: not idempotent",
        "pairs": pairs,
    }
