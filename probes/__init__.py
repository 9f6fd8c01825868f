"""Probes: the analyses of a pair. ``linear``: what each layer of each model represents;
``patching``: what carries the models' difference (activation patching: mediation; component
swapping: locus); ``components``: which heads and MLPs predict and which steer, and the migration
map; ``sampling``: generation, with components patched from the other model; ``value``: the
model-based alternative (a Q head read from the base's residual stream and the value-guided
sampler); ``frontier``: every steering method's true utility against KL on the organism, beside
the exact optimum pi*.

A notebook's lines (with ``lab``, which loads the pair and caches its activations)::

    fits = probes.fit_probes(store, ["scene"])                  # a probe per layer and model
    kl = probes.KLMetric.to_model(pair.base, tokens, positions=range(tokens.shape[1]))
    table = probes.cross_model(pair, tokens, "z", kl, by_position=False)   # base heads -> tuned
    scores = probes.classify(pair, tokens)                      # prediction vs steering scores
    probes.migration_map(scores)

The names below are each subpackage's entry points; everything else is in the subpackage.
"""

from probes import components, frontier, linear, patching, sampling, value
from probes.components import ClassifyConfig, classify, layer_summary, migration_map, top_steering
from probes.linear import Probe, ProbeConfig, ProbeResults, fit_probes, plot_probe_scores
from probes.patching import (
    KLMetric,
    LogitDiff,
    TokenSetProb,
    cross_model,
    denoise,
    noise,
    patch,
    swap_components,
    to_grid,
)
from probes.sampling import sample

__all__ = [
    "ClassifyConfig",
    "KLMetric",
    "LogitDiff",
    "Probe",
    "ProbeConfig",
    "ProbeResults",
    "TokenSetProb",
    "classify",
    "components",
    "cross_model",
    "denoise",
    "fit_probes",
    "frontier",
    "layer_summary",
    "linear",
    "migration_map",
    "noise",
    "patch",
    "patching",
    "plot_probe_scores",
    "sample",
    "sampling",
    "swap_components",
    "to_grid",
    "top_steering",
    "value",
]
