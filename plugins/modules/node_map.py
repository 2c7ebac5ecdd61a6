#!/usr/bin/python
# -*- coding: utf-8 -*-

# Copyright (c) 2026, rayhpc.slurm developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: node_map
short_description: Validate and write the SLURM node name to IP map that Ray uses
version_added: 0.1.0
description:
  - Validates a mapping of SLURM node names to IP addresses, the address Ray uses on each node.
    The mapping comes from O(nodes) (for example from the inventory) or, without O(nodes), from
    the C(NodeAddr) of every SLURM node.
  - With O(from_slurm=true) (the default) the site is read with C(scontrol show node -o) on the
    managed host, and the map is checked against it.
  - Finds malformed IPs, duplicate IPs, duplicate node names (also after removing surrounding
    spaces and ignoring case), node names SLURM does not know, nodes SLURM has in O(partitions)
    that the map lacks, IPs that disagree with SLURM's C(NodeAddr) (a host name is resolved),
    unknown partitions, and with O(check_dns=true) IPs that disagree with DNS.
  - On any finding the module fails with a message that names every bad entry (node name, value
    and problem), and returns the same as RV(findings). Nothing is written then.
  - Optionally writes the normalised mapping to O(dest), the node map file the C(ray_slurm)
    provider reads (its C(provider.node_map) setting).
author:
  - rayhpc.slurm developers (@rayhpc)
extends_documentation_fragment:
  - ansible.builtin.files
attributes:
  check_mode:
    support: full
    description: Validates as usual; reports whether O(dest) would change, without writing it.
  diff_mode:
    support: full
    description: Shows the old and new content of O(dest), and its file attributes.
  platform:
    support: full
    platforms: posix
    description: Runs on a host with the SLURM client commands (a login node) when O(from_slurm=true).
options:
  nodes:
    description:
      - The node map to validate, either a dict of node name to IP, or a list of dicts with keys
        C(name) and C(ip). Use the list form when the source may name a node twice (a dict
        cannot hold a duplicate name).
      - Names are stripped of surrounding spaces; IPs are written in canonical form
        (for example C(fe80::1) for C(fe80:0::1)).
      - If not given (or empty), the mapping is SLURM's C(NodeAddr) of every node in
        O(partitions), resolved to an IP if it is a host name; this needs O(from_slurm=true).
    type: raw
  from_slurm:
    description:
      - Read the site's nodes with C(scontrol show node -o) and check the map against them
        (unknown names, missing nodes, C(NodeAddr)).
      - If V(false), only the map itself is checked (IPs, duplicates, and DNS with O(check_dns)).
    type: bool
    default: true
  partitions:
    description:
      - The SLURM partitions Ray uses. Every SLURM node in any of them must be in the map.
      - Nodes outside these partitions may still be in the map, but must be known to SLURM.
      - Empty means all of SLURM's nodes. Needs O(from_slurm=true).
    type: list
    elements: str
    default: []
  check_dns:
    description:
      - Resolve each node's host name (SLURM's C(NodeHostName), or the node name when it is not
        known to SLURM or O(from_slurm=false)) and fail if the map's IP is not among its
        addresses, or if it does not resolve.
    type: bool
    default: false
  slurm_conf:
    description:
      - Path of the C(slurm.conf) to use; set as E(SLURM_CONF) for C(scontrol).
      - Default is SLURM's own (the environment's E(SLURM_CONF), else the compiled-in path).
    type: path
  slurm_bin:
    description:
      - Directory of the SLURM commands. Default is to find C(scontrol) on E(PATH).
    type: path
  dest:
    description:
      - Write the normalised mapping to this file as a YAML mapping of node name to IP, one node
        a line, sorted by node name. The file is replaced atomically and only if its content changes.
      - The directory must exist. Use O(mode), O(owner) and O(group) to set its attributes,
        for example O(mode=0644) so that every user's Ray can read it.
    type: path
notes:
  - C(scontrol show node -o) prints one line per node; values with spaces (such as C(Reason=) or
    C(OS=)) are handled, a field value is the text up to the next C(Key=).
seealso:
  - name: scontrol manual
    description: The SLURM command the module reads the nodes with.
    link: https://slurm.schedmd.com/scontrol.html
"""

EXAMPLES = r"""
- name: Check the map from the inventory against SLURM (nodes of the partitions Ray uses)
  rayhpc.slurm.node_map:
    nodes: "{{ site_node_map }}"          # {n1: 10.77.0.11, n2: 10.77.0.12}
    partitions: [debug, long]

- name: Validate and write the map file the provider reads
  rayhpc.slurm.node_map:
    nodes:
      - {name: gpu01, ip: 10.10.1.1}
      - {name: gpu02, ip: 10.10.1.2}
    partitions: [gpu]
    check_dns: true
    dest: /shared/ray/node_map.yaml
    mode: "0644"
    owner: root
    group: root

- name: Write SLURM's own NodeAddr as the map (no inventory map)
  rayhpc.slurm.node_map:
    slurm_conf: /etc/slurm/slurm.conf
    dest: /shared/ray/node_map.yaml
    mode: "0644"

- name: Check a map without SLURM (for example on the controller), against DNS only
  rayhpc.slurm.node_map:
    nodes: "{{ site_node_map }}"
    from_slurm: false
    check_dns: true
  delegate_to: localhost
"""

RETURN = r"""
mapping:
  description: The normalised mapping, node name to canonical IP, sorted by node name.
  returned: success
  type: dict
  sample: {"n1": "10.77.0.11", "n2": "10.77.0.12"}
findings:
  description:
    - Every problem found; empty on success.
    - Each has the node name (or option, or partition) in C(name), the value given in C(value),
      a C(problem) code and a human-readable C(detail).
    - Problem codes are C(invalid_entry), C(malformed_ip), C(duplicate_name), C(duplicate_ip),
      C(unknown_node), C(missing_node), C(unknown_partition), C(slurm_mismatch),
      C(slurm_unresolved), C(dns_mismatch), C(dns_unresolved).
  returned: always
  type: list
  elements: dict
  sample:
    - {"name": "n3", "value": "10.77.0.99", "problem": "slurm_mismatch", "detail": "SLURM's NodeAddr is 10.77.0.13"}
slurm_nodes:
  description: The number of nodes SLURM reported (all partitions).
  returned: when O(from_slurm=true) and C(scontrol) answered
  type: int
  sample: 3
dest:
  description: The file the mapping was written to.
  returned: when O(dest) is given
  type: str
  sample: /shared/ray/node_map.yaml
"""

import os
import tempfile

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.common.text.converters import to_native

from ansible_collections.rayhpc.slurm.plugins.module_utils.slurm_nodes import (
    SlurmError,
    entries_from_option,
    entries_from_slurm,
    format_findings,
    render_node_map,
    scontrol_show_nodes,
    validate,
)


def read_text(module: AnsibleModule, path: str) -> str | None:
    """The file's content, None if it does not exist."""
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read()
    except FileNotFoundError:
        return None
    except (OSError, UnicodeError) as exc:
        module.fail_json(msg="cannot read dest %s: %s" % (path, to_native(exc)), findings=[])


def write_map(module: AnsibleModule, dest: str, content: str, result: dict) -> None:
    """Write content to dest atomically if it differs; set the file attributes; fill in
    changed and diff."""
    directory = os.path.dirname(os.path.abspath(dest))
    if not os.path.isdir(directory):
        module.fail_json(msg="the directory of dest, %s, does not exist" % directory, findings=[])
    before = read_text(module, dest)
    changed = before != content
    diffs = [{"before_header": dest, "after_header": dest, "before": before or "", "after": content}]
    if changed and not module.check_mode:
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=".node_map.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(content)
            module.atomic_move(tmp, dest, unsafe_writes=module.params["unsafe_writes"])
        except Exception as exc:  # pylint: disable=broad-exception-caught
            if os.path.exists(tmp):
                os.unlink(tmp)
            module.fail_json(msg="cannot write %s: %s" % (dest, to_native(exc)), findings=[])
    attributes_diff: dict = {}
    file_args = module.load_file_common_arguments(module.params, path=dest)
    changed = module.set_fs_attributes_if_different(file_args, changed, diff=attributes_diff)
    if attributes_diff:
        header = "%s (attributes)" % dest
        diffs.append(dict(attributes_diff, before_header=header, after_header=header))
    result.update(changed=changed, dest=dest)
    if module._diff:
        result["diff"] = diffs


def main() -> None:
    module = AnsibleModule(
        argument_spec=dict(
            nodes=dict(type="raw"),
            from_slurm=dict(type="bool", default=True),
            partitions=dict(type="list", elements="str", default=[]),
            check_dns=dict(type="bool", default=False),
            slurm_conf=dict(type="path"),
            slurm_bin=dict(type="path"),
            dest=dict(type="path"),
        ),
        add_file_common_args=True,
        supports_check_mode=True,
    )
    params = module.params
    if not params["nodes"] and not params["from_slurm"]:
        module.fail_json(msg="nothing to validate: give nodes, or set from_slurm=true", findings=[])
    if params["partitions"] and not params["from_slurm"]:
        module.fail_json(msg="partitions need from_slurm=true", findings=[])

    result: dict = {"changed": False}
    slurm_nodes = None
    if params["from_slurm"]:
        try:
            slurm_nodes = scontrol_show_nodes(module, params["slurm_bin"], params["slurm_conf"])
        except SlurmError as exc:
            module.fail_json(msg=str(exc), findings=[])
        result["slurm_nodes"] = len(slurm_nodes)

    if params["nodes"]:
        entries, findings = entries_from_option(params["nodes"])
    else:
        entries, findings = entries_from_slurm(slurm_nodes, params["partitions"])
    mapping, problems = validate(entries, slurm_nodes, params["partitions"], params["check_dns"])
    findings.extend(problems)
    if findings:
        module.fail_json(msg=format_findings(findings), findings=findings, **result)
    if not mapping:
        module.fail_json(msg="the node map is empty: SLURM has no node in partitions %s" % ", ".join(params["partitions"]),
                         findings=[], **result)

    result.update(mapping=mapping, findings=[])
    if params["dest"]:
        write_map(module, params["dest"], render_node_map(mapping), result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
