"""Activation patching and component swapping, exact and batched."""
