"""kube_standin: a small, local stand-in for the Kubernetes API calls the burst provider uses.

No Kubernetes API server can run on the machines this project is built and tested on, yet the
provider must be written against the official ``kubernetes`` Python client. This package serves the
subset of the core/v1 REST API that client calls (pods, secrets, services, resource quotas,
namespaces) over plain HTTP with a bearer token, and runs every scheduled pod's first container as
a local process in a network namespace of its own (a "cloud host"), so that a burst Ray worker
really starts and joins the cluster. docs/kubernetes-standin.md lists exactly what is implemented
and how it differs from a real API server.

Modules, one job each:
    errors     Kubernetes ``Status`` errors (404, 409, 403, 422, 401, ...)
    quantity   resource quantities ("500m", "4Gi") as numbers and back
    selectors  label selectors (equality- and set-based)
    patch      merge, strategic-merge (map subset) and JSON patches
    objects    validation and defaulting of the stored kinds
    quota      ResourceQuota admission
    store      the object store: versions, uids, timestamps, events for watches
    api        the HTTP API (routing, auth, JSON)
    cloudhosts the cloud hosts' network namespaces
    scheduler  which cloud host a pod fits on, and why not
    podenv     a container's environment (values, secrets, field refs)
    runner     the pod lifecycle: schedule, "pull", start, watch, terminate
    server     configuration and the process that ties them together
    launcher   ``scripts/kube-standin up|down|status``
"""
