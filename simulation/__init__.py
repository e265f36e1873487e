"""Meter and load simulators (a user feature: `hes simulate`)."""
