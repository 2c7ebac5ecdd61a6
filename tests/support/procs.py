"""Commands and waits: every failure says what was run and what it printed."""

from __future__ import annotations

import logging
import subprocess
import time
from collections.abc import Callable, Sequence
from typing import Any

log = logging.getLogger("support")


class CommandFailed(AssertionError):
    """A command the harness ran exited non-zero; the message has its output's tail."""


class WaitTimeout(AssertionError):
    """What the harness waited for did not happen in time."""


def run(
    args: Sequence[str], timeout: float = 300, check: bool = True, **kwargs: Any
) -> subprocess.CompletedProcess[str]:
    """Run a command, log its output, raise CommandFailed with that output if it fails."""
    args = [str(a) for a in args]
    started = time.monotonic()
    proc = subprocess.run(
        args, capture_output=True, text=True, timeout=timeout, check=False, **kwargs
    )
    log.info(
        "$ %s -> %s (%.1f s)\n%s%s",
        " ".join(args),
        proc.returncode,
        time.monotonic() - started,
        proc.stdout[-4000:],
        proc.stderr[-4000:],
    )
    if check and proc.returncode != 0:
        output = f"{_ends(proc.stdout)}\n{_ends(proc.stderr)}"
        raise CommandFailed(f"{' '.join(args)} exited {proc.returncode}:\n{output}")
    return proc


def _ends(text: str, keep: int = 3000) -> str:
    """The head and the tail of a long output: why a script died is often said first, before
    the logs it dumps, or last."""
    if len(text) <= 2 * keep:
        return text
    return f"{text[:keep]}\n[... {len(text) - 2 * keep} characters ...]\n{text[-keep:]}"


def wait_for(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 2.0) -> Any:
    """Poll ``predicate`` until it returns something true, which is returned."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise WaitTimeout(f"timed out after {timeout:.0f} s waiting for {what}")
