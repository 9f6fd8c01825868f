"""Loading a base/tuned pair as hooked models: checkpoints, memory, what the pair is."""
