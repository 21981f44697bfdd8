"""The /ui/ dashboard. `series`, `charts` and `diff` are pure (no I/O): they turn rows the
domain functions return into things the templates show."""
