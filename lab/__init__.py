"""Steerlab: which components of a fine-tuned model stopped predicting and started steering?"""

from lab.errors import LabError
from lab.models.pair import ModelPair, PairConfig, load_pair

__all__ = ["LabError", "ModelPair", "PairConfig", "load_pair"]
