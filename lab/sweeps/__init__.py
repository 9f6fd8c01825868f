"""Sweeps: a TOML config expands into a job graph; runner and analyses by concern.

Modules, bottom to top: ``schema`` (TOML tables checked against dataclasses), ``graph`` (needs
resolved to exact jobs), ``config`` (the types: Analysis, DatasetSource, Job, SweepConfig),
``identity`` (what a job's result depends on), ``context`` (what a running job can ask for),
``analyses`` (the kinds, by concern, and their registries), ``runner`` (the run folder and one
job), ``executors`` (local, Ray, Slurm), ``driver`` (schedules the graph on one) and ``sweep``
(load_config, run, plan).
"""

from lab.sweeps.config import Analysis, DatasetSource, Job, SweepConfig
from lab.sweeps.context import SweepContext
from lab.sweeps.sweep import load_config, plan, run

__all__ = [
    "Analysis",
    "DatasetSource",
    "Job",
    "SweepConfig",
    "SweepContext",
    "load_config",
    "plan",
    "run",
]
