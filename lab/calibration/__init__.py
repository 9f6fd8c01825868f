"""The calibration suite: outcome probabilities, ECE and reliability figures.

``calibrate`` scores both models of a pair on prompt sets whose true answer distributions are
known; ``summary`` summarises and plots the results, ``reliability`` bins confidence against
accuracy.
"""

from lab.calibration.calibrate import (
    CalibrationConfig,
    ScoredRecord,
    calibrate,
    expected_calibration_error,
    outcome_scores,
    sequence_logprobs,
)
from lab.calibration.reliability import reliability_bins, reliability_diagram
from lab.calibration.summary import SCORES, format_summary, plot_calibration, summarize

__all__ = [
    "SCORES",
    "CalibrationConfig",
    "ScoredRecord",
    "calibrate",
    "expected_calibration_error",
    "format_summary",
    "outcome_scores",
    "plot_calibration",
    "reliability_bins",
    "reliability_diagram",
    "sequence_logprobs",
    "summarize",
]
