"""Activation patching and component swapping, exact and batched.

A notebook's five lines::

    from probes.patching import KLMetric, cross_model, swap_components, to_grid
    kl = KLMetric.to_model(pair.base, tokens, positions=range(tokens.shape[1]))
    mediation = cross_model(pair, tokens, "z", kl, by_position=False)   # what flows through
    locus = swap_components(pair, tokens, kl)                            # whose weights changed
    to_grid(mediation, column="share")                                   # layer x head

The engine that makes it fast (``probes.patching._engine``) is private.
"""

from probes.patching import metrics
from probes.patching.attribution import attribute, rank_correlation
from probes.patching.heatmaps import component_heatmap, layer_head_heatmap, layer_position_heatmap
from probes.patching.metrics import *  # noqa: F403 (metrics.__all__, re-exported below)
from probes.patching.patch import PatchConfig, cross_model, denoise, noise, patch, patch_jointly
from probes.patching.sites import SITE_KINDS, Site, enumerate_sites
from probes.patching.swap import SwapConfig, swap_components
from probes.patching.table import COLUMNS, sites_of, to_grid
from probes.patching.units import Component, component_name

__all__ = [  # every metric, then the rest
    *metrics.__all__,
    "COLUMNS",
    "SITE_KINDS",
    "Component",
    "PatchConfig",
    "Site",
    "SwapConfig",
    "attribute",
    "component_heatmap",
    "component_name",
    "cross_model",
    "denoise",
    "enumerate_sites",
    "layer_head_heatmap",
    "layer_position_heatmap",
    "noise",
    "patch",
    "patch_jointly",
    "rank_correlation",
    "sites_of",
    "swap_components",
    "to_grid",
]
