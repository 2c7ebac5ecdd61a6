"""The one entry point from a raw cluster config to a checked one: ``load``.

It runs what ``ray up`` runs through the provider (fill in each type's resources, then
``bootstrap``: every rule of ``provider``, ``nodetypes`` and ``kubetypes``) and returns either the
bootstrapped config with its resolved ``Settings`` or every problem found, each with the field
it is about, what is wrong (naming the bad value) and how to fix it. It never raises for what a
config contains: a user's mistake is a problem to report, not a traceback.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ray_slurm.config.nodetypes import ConfigError
from ray_slurm.config.provider import (
    Settings,
    bootstrap,
    expected_versions,
    fillout_resources,
    load_settings,
    resolve_settings,
)

EXAMPLE = "examples/ray-slurm.yaml"
# A fix for each kind of problem the rules report (they name the field and value already).
FIXES = (
    ("unknown key", "remove the key or correct its spelling"),
    ("required", "add it"),
    ("disagrees with", "make both equal, or leave resources out (filled in from node_config)"),
    ("too long", "use a short node-local path such as /tmp"),
    ("node map", "point provider.node_map at a readable YAML file of `node: ip` lines"),
    ("disable_node_updaters", "set provider.disable_node_updaters: true"),
    ("expected a whole number", "write a whole number"),
    ("is more than max_workers", "lower min_workers or raise max_workers"),
    ("must match", "use letters, digits, '-' and '_', starting with a letter or digit"),
)
DEFAULT_FIX = "correct this value (see README.md, 'Writing ray-slurm.yaml')"


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a config: where, what (with the bad value), and the fix."""

    field: str  # e.g. "available_node_types.cpu.node_config.memory"; "" for the whole file
    message: str
    fix: str

    @classmethod
    def from_rule(cls, text: str) -> Problem:
        """A rule's ``"<field>: <what is wrong>"``, with the fix for its kind."""
        where, sep, message = text.partition(": ")
        if not sep or " " in where:
            where, message = "", text
        fix = next((fix for needle, fix in FIXES if needle in text), DEFAULT_FIX)
        return cls(where, message, fix)

    def __str__(self) -> str:
        return f"{self.field}: {self.message}" if self.field else self.message


@dataclass(frozen=True)
class Loaded:
    """A config as ``ray up`` would run it, or why it would not."""

    raw: Any  # as read
    config: dict[str, Any] | None  # bootstrapped: what Ray and the provider get; None: problems
    settings: Settings | None  # resolved, as far as it can be with problems; None: unreadable
    problems: list[Problem] = field(default_factory=list)

    def required(self) -> tuple[dict[str, Any], Settings]:
        """The config and settings, or ConfigError listing every problem."""
        if self.problems or self.config is None or self.settings is None:
            raise ConfigError([str(p) for p in self.problems])
        return self.config, self.settings


def load(raw: Any, source: str = "the config", on_site: bool = True) -> Loaded:
    """Check a raw cluster config (not changed) the way ``ray up`` does, every problem at once.

    ``on_site=False``: checked away from the site it is for (see ``bootstrap``)."""
    if (shape := not_a_cluster_config(raw, source)) is not None:
        return _refused(raw, shape, f"start from {EXAMPLE}")
    cfg = copy.deepcopy(raw)
    expect = expected_versions(on_site)
    try:
        try:
            bootstrap(fillout_resources(cfg), on_site)
        except ConfigError as exc:  # what can still be told, for the checks of the site
            settings = resolve_settings(cfg["provider"], cfg.get("cluster_name", ""), [], expect)
            return Loaded(raw, None, settings, [Problem.from_rule(p) for p in exc.problems])
        settings = load_settings(cfg["provider"], cfg["cluster_name"], expect)
    except (TypeError, AttributeError, KeyError, ValueError) as exc:  # a shape no rule expects
        return _refused(raw, f"{source}: cannot be read as a cluster config "
                        f"({type(exc).__name__}: {exc})",
                        f"compare its structure with {EXAMPLE}")  # fmt: skip
    return Loaded(raw, cfg, settings)


def not_a_cluster_config(raw: Any, source: str) -> str | None:
    """Why ``raw`` is not a cluster config at all (no mapping with a provider section), or None."""
    if not isinstance(raw, dict) or not isinstance(raw.get("provider"), dict):
        return f"{source}: not a Ray cluster config (no provider section)"
    return None


def load_file(path: str | Path, on_site: bool = True) -> Loaded:
    """``load`` a YAML file; raises OSError only if it cannot be read at all."""
    text = Path(path).read_text()
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        return _refused(None, f"{path} is not valid YAML: {' '.join(str(exc).split())}",
                        "correct the YAML syntax")  # fmt: skip
    return load(raw, str(path), on_site)


def _refused(raw: Any, message: str, fix: str) -> Loaded:
    return Loaded(raw, None, None, [Problem("", message, fix)])
