"""This host's side: the cluster's private state directory, private paths, ports and
addresses, TLS."""
