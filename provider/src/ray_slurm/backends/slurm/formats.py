"""SLURM's formats, read by the SLURM backend and the config alike: SLURM's durations
(``--time``, squeue's time left) and the node map file (SLURM node name -> IP) that the Ansible
collection writes."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import yaml


def parse_duration(text: str) -> float | None:
    """Seconds of a SLURM duration (``--time``, squeue ``%L``); None for no limit.

    SLURM writes ``MM``, ``MM:SS``, ``HH:MM:SS``, ``D-HH``, ``D-HH:MM``, ``D-HH:MM:SS``
    (a bare number is minutes) and ``UNLIMITED``/``INFINITE``/``NOT_SET``/``INVALID``.
    """
    text = text.strip()
    if text.upper() in ("UNLIMITED", "INFINITE", "NOT_SET", "INVALID", ""):
        return None
    days, dash, clock = text.rpartition("-")
    if dash and not days:
        raise ValueError(f"not a SLURM duration: {text!r}")
    try:
        parts = [int(p) for p in clock.split(":")]
        day_s = int(days) * 86400 if days else 0
    except ValueError:
        raise ValueError(f"not a SLURM duration: {text!r}") from None
    if days:  # D-HH, D-HH:MM, D-HH:MM:SS
        parts += [0] * (3 - len(parts))
        h, m, s = parts[:3]
    elif len(parts) == 1:
        h, m, s = 0, parts[0], 0
    elif len(parts) == 2:
        h, m, s = 0, parts[0], parts[1]
    elif len(parts) == 3:
        h, m, s = parts
    else:
        raise ValueError(f"not a SLURM duration: {text!r}")
    if min(h, m, s) < 0 or len(parts) > 3:
        raise ValueError(f"not a SLURM duration: {text!r}")
    return float(day_s + h * 3600 + m * 60 + s)


class NodeMapError(ValueError):
    pass


def load_node_map(path: str) -> dict[str, str]:
    """Read and validate a map file; the error names the file and every bad entry."""
    try:
        data = yaml.safe_load(Path(path).read_text())
    except OSError as exc:
        raise NodeMapError(f"node map {path}: cannot read: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise NodeMapError(f"node map {path}: not valid YAML/JSON: {exc}") from exc
    if not isinstance(data, dict) or not data:
        raise NodeMapError(f"node map {path}: expected a non-empty mapping of node name to IP")
    problems = []
    for name, ip in data.items():
        try:
            ipaddress.ip_address(str(ip))
        except ValueError:
            problems.append(f"{name}: {ip!r} is not an IP address")
    if problems:
        raise NodeMapError(f"node map {path}: " + "; ".join(problems))
    return {str(name): str(ip) for name, ip in data.items()}
