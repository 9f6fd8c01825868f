"""Linear probes from an activation store: kinds, batched solvers, splits, controls, probes by
layer and their plots.

Quick tour::

    from probes.linear import Probe, ProbeConfig, fit_probes, plot_probe_scores
    Probe("ridge", reg=10.0).fit(x, y).score(x_test, y_test)      # one probe, sklearn-style
    results = fit_probes(store, ["belief"], ProbeConfig(kind="ridge", control="shuffle"))
    plot_probe_scores(results.table, target="belief")              # every layer, both models
"""

from probes.linear.controls import (
    CONTROLS,
    make_control,
    random_init_like,
    shuffle_control,
    type_control,
)
from probes.linear.kinds import (
    PROBE_KINDS,
    Probe,
    ProbeKind,
    apply_map,
    fit_linear,
    get_kind,
    score_map,
)
from probes.linear.layerwise import ProbeConfig, ProbeResults, fit_probes, layer_of
from probes.linear.logistic import fit_logistic, logistic_objective
from probes.linear.plots import plot_probe_scores
from probes.linear.solvers import LinearMap, SolverConfig, fit_diff_means, fit_ridge
from probes.linear.source import ActivationSource, TensorSource, read_target
from probes.linear.splits import Split, split_by_sequence, standardize

__all__ = [
    "CONTROLS",
    "PROBE_KINDS",
    "ActivationSource",
    "LinearMap",
    "Probe",
    "ProbeConfig",
    "ProbeKind",
    "ProbeResults",
    "SolverConfig",
    "Split",
    "TensorSource",
    "apply_map",
    "fit_diff_means",
    "fit_linear",
    "fit_logistic",
    "fit_probes",
    "fit_ridge",
    "get_kind",
    "layer_of",
    "logistic_objective",
    "make_control",
    "plot_probe_scores",
    "random_init_like",
    "read_target",
    "score_map",
    "shuffle_control",
    "split_by_sequence",
    "standardize",
    "type_control",
]
