"""Components: which heads and MLPs predict and which steer, the migration map, and every
localization method's scores.

In one call::

    from probes.components import classify, migration_map
    scores = classify(pair, tokens)          # score_components, then classify_scores
    migration_map(scores)
"""

from probes.components.classify import (
    ClassifyConfig,
    classify,
    classify_scores,
    component_sites,
    score_components,
)
from probes.components.intervals import departure
from probes.components.migration import (
    layer_summary,
    locus_map,
    locus_table,
    migration_map,
    migration_table,
    top_steering,
)

__all__ = [
    "ClassifyConfig",
    "classify",
    "classify_scores",
    "component_sites",
    "departure",
    "layer_summary",
    "locus_map",
    "locus_table",
    "migration_map",
    "migration_table",
    "score_components",
    "top_steering",
]
