"""prompt-worker: an autonomous prompt optimizer service."""
