"""Checkpoints: finding files, detecting architectures, hashing, loading offline, the manager and its caches."""
