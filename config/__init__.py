"""Configuration: typed settings read from HES_* variables, and logging."""
