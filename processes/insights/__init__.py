"""Consumption insights: patterns, forecasts, anomaly scores, revenue protection, priorities."""
