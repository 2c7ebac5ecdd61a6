"""The three JSON patch flavours the official client sends with ``PATCH``.

The client sends a dict body as ``application/strategic-merge-patch+json`` and a list body as
``application/json-patch+json``; callers can also ask for ``application/merge-patch+json``.
Labels and annotations (what the provider patches) are maps, where strategic merge and JSON merge
agree; lists are replaced whole (strategic merge's per-key list merging is not implemented).
"""

from __future__ import annotations

import copy
from typing import Any

from .errors import ApiError, bad_request

MERGE = "application/merge-patch+json"
STRATEGIC = "application/strategic-merge-patch+json"
JSON_PATCH = "application/json-patch+json"


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386: maps merge recursively, ``null`` deletes a key, anything else replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if key == "$patch":
            raise bad_request("strategic merge directives ($patch) are not supported")
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def _pointer(path: str) -> list[str]:
    if path == "":
        return []
    if not path.startswith("/"):
        raise bad_request(f"invalid JSON pointer {path!r}")
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def _parent(doc: Any, parts: list[str]) -> Any:
    node = doc
    for part in parts[:-1]:
        if isinstance(node, list):
            node = node[int(part)]
        elif isinstance(node, dict) and part in node:
            node = node[part]
        else:
            raise bad_request(f"doc is missing path: /{'/'.join(parts)}")
    return node


def json_patch(target: Any, operations: list[Any]) -> Any:
    """RFC 6902 ``add``, ``remove``, ``replace`` and ``test``."""
    doc = copy.deepcopy(target)
    for op in operations:
        if not isinstance(op, dict) or "op" not in op or "path" not in op:
            raise bad_request("json patch operations need 'op' and 'path'")
        parts = _pointer(op["path"])
        if not parts:
            raise bad_request("json patch of the whole document is not supported")
        parent, last = _parent(doc, parts), parts[-1]
        try:
            if op["op"] == "test":
                current = parent[int(last)] if isinstance(parent, list) else parent[last]
                if current != op.get("value"):
                    raise ApiError(422, f"testing value {op['path']} failed")
            elif op["op"] == "remove":
                del parent[int(last) if isinstance(parent, list) else last]
            elif op["op"] in ("add", "replace"):
                if isinstance(parent, list):
                    index = len(parent) if last == "-" else int(last)
                    if op["op"] == "add":
                        parent.insert(index, op["value"])
                    else:
                        parent[index] = op["value"]
                else:
                    if op["op"] == "replace" and last not in parent:
                        raise bad_request(f"replace operation does not apply: {op['path']}")
                    parent[last] = op["value"]
            else:
                raise bad_request(f"unsupported json patch operation {op['op']!r}")
        except (KeyError, IndexError, ValueError, TypeError) as exc:
            raise bad_request(f"json patch {op['op']} {op['path']}: {exc}") from exc
    return doc


def apply_patch(target: dict[str, Any], content_type: str, body: Any) -> dict[str, Any]:
    """Apply a patch body of the given content type; 415 for types the stand-in does not speak."""
    kind = content_type.split(";")[0].strip().lower()
    if kind in (MERGE, STRATEGIC):
        if not isinstance(body, dict):
            raise bad_request("a merge patch must be a JSON object")
        return merge_patch(target, body)
    if kind == JSON_PATCH:
        if not isinstance(body, list):
            raise bad_request("a json patch must be a JSON array")
        return json_patch(target, body)
    raise ApiError(
        415,
        f"the body of the request was in an unknown format - accepted media types "
        f"include: {JSON_PATCH}, {MERGE}, {STRATEGIC}",
    )
