"""The cluster core: what the backends saw, turned into decisions (back off, remove, drain, hold),
carried out through the backends' verbs; its memory (watch) and its rules (policy, burst, pace)."""
