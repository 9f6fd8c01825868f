"""Hooks, recording activations of a pair, and the on-disk activation store."""
