"""Container images as local Python environments.

There is no container runtime here: an "image" is a name that maps to a Python environment on
this machine whose ``bin`` goes first on the pod's PATH. By default only images whose tag names the
Ray (and optionally Python) version of the environment running the stand-in map to it, e.g.
``rayproject/ray:2.60.0`` or ``rayproject/ray:2.60.0-py312-cpu``; every other image fails with
``ImagePullBackOff``, so the provider's image/version check and its "pod never started" report can
be tested.
"""

from __future__ import annotations

import fnmatch
import importlib.metadata
import sys
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class ImageRule:
    """Images matching the shell-style ``pattern`` run with the environment at ``env``."""

    pattern: str
    env: Path

    @classmethod
    def parse(cls, text: str) -> ImageRule:
        pattern, sep, env = text.rpartition("=")
        if not sep or not pattern or not env:
            raise ValueError(f"image rule must be PATTERN=ENV_DIR, got {text!r}")
        return cls(pattern, Path(env))


def default_rules(env: Path) -> list[ImageRule]:
    """Tags of this environment's Ray version (and Python version, if the tag names one)."""
    try:
        ray = importlib.metadata.version("ray")
    except importlib.metadata.PackageNotFoundError:
        return []
    py = f"py{sys.version_info.major}{sys.version_info.minor}"
    return [ImageRule(p, env) for p in (f"*:{ray}", f"*:{ray}-{py}", f"*:{ray}-{py}-*")]


def resolve(image: str, rules: list[ImageRule]) -> Path | None:
    """The environment for an image, or None: the image cannot be "pulled"."""
    for rule in rules:
        if fnmatch.fnmatchcase(image, rule.pattern):
            return rule.env
    return None
