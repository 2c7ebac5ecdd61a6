"""The Ray-facing adapter: what Ray's autoscaler and `ray up`/`down`/`exec` call."""
