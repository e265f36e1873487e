"""Composition roots: settings to running processes (pools, connections, applications, workers)."""
