"""Sweeps: a TOML config expands into a job graph; runner and analyses by concern."""
