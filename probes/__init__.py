"""Steerlab's analyses: linear probes, activation patching, attribution, classification."""

__all__: list[str] = []
