"""Processes: policies that react to readings or events and issue commands."""
