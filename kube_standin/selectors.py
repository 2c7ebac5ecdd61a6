"""Label selectors, as ``labelSelector=`` carries them in list and delete-collection calls.

The provider finds its pods by labels (user, cluster, node type), so equality-based (``a=b``,
``a==b``, ``a!=b``) and set-based (``a in (x,y)``, ``a notin (x)``, ``a``, ``!a``) requirements must
select exactly what a real API server selects.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping

from .errors import bad_request

Requirement = Callable[[Mapping[str, str]], bool]

_KEY = r"[A-Za-z0-9]([-A-Za-z0-9_./]*[A-Za-z0-9])?"
_VALUE = r"([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?"
_SET = re.compile(rf"^({_KEY})\s+(in|notin)\s+\(([^()]*)\)$")
_EQ = re.compile(rf"^({_KEY})\s*(==|=|!=)\s*({_VALUE})$")
_EXISTS = re.compile(rf"^(!?)\s*({_KEY})$")


def _split(selector: str) -> list[str]:
    """Split on commas that are not inside a set's parentheses."""
    parts, depth, current = [], 0, []
    for char in selector:
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        if char == "," and depth == 0:
            parts.append("".join(current).strip())
            current = []
        else:
            current.append(char)
    parts.append("".join(current).strip())
    if depth != 0:
        raise bad_request(f"unable to parse requirement: unbalanced parentheses in {selector!r}")
    return parts


def _requirement(text: str, selector: str) -> Requirement:
    if match := _SET.match(text):
        key, op = match.group(1), match.group(3)
        values = {v.strip() for v in match.group(4).split(",")}
        if any(not re.fullmatch(_VALUE, v) for v in values) or values == {""}:
            raise bad_request(f"unable to parse requirement: invalid values in {selector!r}")
        if op == "in":
            return lambda labels: labels.get(key) in values
        return lambda labels: labels.get(key) not in values
    if match := _EQ.match(text):
        key, op, value = match.group(1), match.group(3), match.group(4)
        if op == "!=":
            return lambda labels: labels.get(key) != value
        return lambda labels: labels.get(key) == value
    if match := _EXISTS.match(text):
        negate, key = match.group(1) == "!", match.group(2)
        if negate:
            return lambda labels: key not in labels
        return lambda labels: key in labels
    raise bad_request(f"unable to parse requirement: {text!r} in selector {selector!r}")


def parse_selector(selector: str | None) -> Requirement:
    """A predicate on a labels map; every requirement must hold. 400 BadRequest if unparsable."""
    if not selector or not selector.strip():
        return lambda labels: True
    requirements = [_requirement(part, selector) for part in _split(selector)]
    return lambda labels: all(req(labels) for req in requirements)


def parse_field_selector(selector: str | None) -> Callable[[Mapping[str, object]], bool]:
    """``fieldSelector``: comma-separated ``path=value``, ``path==value``, ``path!=value`` on
    dotted paths such as ``metadata.name``, ``status.phase``, ``spec.nodeName``."""
    if not selector or not selector.strip():
        return lambda obj: True
    tests = []
    for part in selector.split(","):
        match = re.match(r"^\s*([A-Za-z.]+)\s*(==|=|!=)\s*([^,]*?)\s*$", part)
        if not match:
            raise bad_request(f"invalid field selector: {selector!r}")
        tests.append((match.group(1).split("."), match.group(2) == "!=", match.group(3)))

    def value(obj: Mapping[str, object], path: list[str]) -> str:
        node: object = obj
        for key in path:
            node = node.get(key) if isinstance(node, Mapping) else None
        return "" if node is None else str(node)

    return lambda obj: all(
        (value(obj, p) != v) if neg else (value(obj, p) == v) for p, neg, v in tests
    )
