"""Loading a base/tuned pair as hooked models: checkpoints, memory, what the pair is.

``load_pair`` resolves and checks both checkpoints (``checkpoints``: the one loading policy),
checks that they fit in memory (``memory``) and boots them as a ``ModelPair``; ``outputs`` holds
what a forward gives (log-probs, hidden states, the KL family) and ``summary`` what a pair is.
"""

from lab.models.checkpoints import (
    Checkpoint,
    data_dir,
    load_config,
    load_model,
    load_tokenizer,
    local_checkpoint,
    organism_dir,
    resolve_checkpoint,
)
from lab.models.memory import available_memory, check_fits, count_parameters
from lab.models.outputs import hidden_states, kl, kl_per_token, model_kl, model_logprobs
from lab.models.pair import ModelPair, PairConfig, load_pair
from lab.models.summary import pair_summary, unique_parameters, weight_change
from lab.models.weightfiles import parse_header, read_header

__all__ = [
    "Checkpoint",
    "ModelPair",
    "PairConfig",
    "available_memory",
    "check_fits",
    "count_parameters",
    "data_dir",
    "hidden_states",
    "kl",
    "kl_per_token",
    "load_config",
    "load_model",
    "load_pair",
    "load_tokenizer",
    "local_checkpoint",
    "model_kl",
    "model_logprobs",
    "organism_dir",
    "pair_summary",
    "parse_header",
    "read_header",
    "resolve_checkpoint",
    "unique_parameters",
    "weight_change",
]
