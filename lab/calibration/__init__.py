"""The calibration suite: outcome probabilities, ECE and reliability figures."""
