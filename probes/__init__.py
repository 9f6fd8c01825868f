"""Probes: linear probes per layer and model (batched), controls, and their plots."""

from lab.organism.targets import organism_targets, policy_value, reach_probability
from probes.linear.controls import (
    CONTROLS,
    make_control,
    random_init_like,
    shuffle_control,
    type_control,
)
from probes.linear.kinds import PROBE_KINDS, Probe, ProbeKind, fit_linear, get_kind
from probes.linear.layerwise import ProbeConfig, ProbeResults, fit_probes, layer_of
from probes.linear.logistic import fit_logistic
from probes.linear.plots import plot_probe_scores
from probes.linear.solvers import LinearMap, SolverConfig, fit_diff_means, fit_ridge
from probes.linear.source import ActivationSource, TensorSource, read_target
from probes.linear.splits import Split, split_by_sequence, standardize
from probes.patching.swap import Component, SwapConfig, swap_components

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
