"""Linear probes: kinds, batched solvers, splits, controls, probes by layer."""
