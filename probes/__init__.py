"""Probes: linear probes per layer and model (batched), controls, and their plots."""

from probes.controls import CONTROLS, make_control, random_init_like, shuffle_control, type_control
from probes.layerwise import ProbeConfig, ProbeResults, fit_probes, layer_of
from probes.linear import PROBE_KINDS, Probe, ProbeKind, fit_linear, get_kind
from probes.logistic import fit_logistic
from probes.plots import plot_probe_scores
from probes.solvers import LinearMap, SolverConfig, fit_diff_means, fit_ridge
from probes.source import ActivationSource, TensorSource, read_target
from probes.splits import Split, split_by_sequence, standardize
from probes.swap import Component, SwapConfig, swap_components
from probes.targets import organism_targets, policy_value, reach_probability

__all__ = [
    "CONTROLS",
    "PROBE_KINDS",
    "ActivationSource",
    "Component",
    "LinearMap",
    "Probe",
    "ProbeConfig",
    "ProbeKind",
    "ProbeResults",
    "SolverConfig",
    "Split",
    "SwapConfig",
    "TensorSource",
    "fit_diff_means",
    "fit_linear",
    "fit_logistic",
    "fit_probes",
    "fit_ridge",
    "get_kind",
    "layer_of",
    "make_control",
    "organism_targets",
    "plot_probe_scores",
    "policy_value",
    "random_init_like",
    "reach_probability",
    "read_target",
    "shuffle_control",
    "split_by_sequence",
    "standardize",
    "swap_components",
    "type_control",
]
