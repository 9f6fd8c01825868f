"""The model organism: a world with ground truth, a base model, a reward model and an RLHF model.

Quick tour::

    org = lab.organism.load()          # the shipped pair (org.pair) + world + labeler + RM
    scene_reach(org.world, samples, "wedding", org.prompt_words + 1)

    from lab.organism import story_world, story_labeler, PiStar
    world, labeler = story_world(), story_labeler()
    sample = world.sample(64, 31, torch.Generator().manual_seed(0))
    sample.tokens, sample.scenes, sample.forward.beliefs, sample.forward.next_token_logprobs
    labeler.utility(sample.tokens)                  # exact true utility per sequence
    pi = PiStar(world, labeler, beta=0.1, length=31)
    pi.sample(prompts), pi.next_token_logprobs(tokens), pi.objective()

    mess3 = load_world("data/worlds/mess3.json")   # a world file (see lab.organism.worldfile)
    model = train_base(mess3, BaseConfig())         # a GPT-2 trained on fresh world samples
    Dataset.from_organism(mess3.sample(256, 31))    # exact beliefs as targets
    (lab.datasets.dataset)

    org = load_organism("data/organism")           # models + world + labeler from the cards
    evaluate_organism(org)                          # the metrics table, one dict per row
    evaluate_policy(any_model, org, EvalData.draw(...))  # metrics of any HF model or bridge

    plant("L2H5,L3 MLP", "out")                    # a planted pair from the deep base (out/base,
    plant_suite()                                   # out/tuned); the suite, into the cache
"""

from lab.organism.bayes import PiStar
from lab.organism.evaluate import (
    EvalConfig,
    EvalData,
    Organism,
    evaluate_organism,
    evaluate_policy,
    load,
    load_organism,
)
from lab.organism.labeler import Labeler
from lab.organism.metrics import generation_metrics, prediction_metrics, scene_reach
from lab.organism.pipeline import OrganismConfig, quick_config, train_organism, train_world_base
from lab.organism.plant import PlantConfig, plant
from lab.organism.reward import RewardConfig, RewardModel, train_reward_model
from lab.organism.rlhf import RLHFConfig, sample_continuations, train_rlhf
from lab.organism.story import story_labeler, story_world
from lab.organism.suite import SUITE, plant_suite, rlhf_seeds
from lab.organism.targets import organism_targets, policy_value, reach_probability
from lab.organism.train import BaseConfig, deep_base_config, train_base
from lab.organism.world import HMM, Forward, WorldSample
from lab.organism.worldfile import EdgeHMM, load_world, read_world

__all__ = [
    "HMM",
    "SUITE",
    "BaseConfig",
    "EdgeHMM",
    "EvalConfig",
    "EvalData",
    "Forward",
    "Labeler",
    "Organism",
    "OrganismConfig",
    "PiStar",
    "PlantConfig",
    "RLHFConfig",
    "RewardConfig",
    "RewardModel",
    "WorldSample",
    "deep_base_config",
    "evaluate_organism",
    "evaluate_policy",
    "generation_metrics",
    "load",
    "load_organism",
    "load_world",
    "organism_targets",
    "plant",
    "plant_suite",
    "policy_value",
    "prediction_metrics",
    "quick_config",
    "reach_probability",
    "read_world",
    "rlhf_seeds",
    "sample_continuations",
    "scene_reach",
    "story_labeler",
    "story_world",
    "train_base",
    "train_organism",
    "train_reward_model",
    "train_rlhf",
    "train_world_base",
]
