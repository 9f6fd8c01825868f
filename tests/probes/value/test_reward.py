"""Rewards: a reward model or function, refused when it reads another tokenizer."""

import pytest
import torch

from lab.errors import LabError
from lab.models.checkpoints import organism_dir
from lab.testing import make_tokenizer
from probes.value import (
    Reward,
    as_reward,
    check_reward,
    load_reward_model,
    practitioner_values,
    word_reward,
)


def test_reward_with_another_tokenizer_refused(loaded_pair):
    model = loaded_pair("gpt2").base
    check_reward(as_reward(word_reward([5]), model.tokenizer), model)  # the pair's own: fine
    other = as_reward(word_reward([5]), make_tokenizer(300))
    with pytest.raises(LabError, match=r"The reward's tokenizer .* differs from the pair's"):
        check_reward(other, model)
    with pytest.raises(LabError, match="differs from the pair's"):
        practitioner_values(model, other, torch.zeros(2, 4, dtype=torch.long), [1.0], start=2)


def test_reward_model_of_another_vocabulary_refused(org, loaded_pair):
    model = loaded_pair("gpt2").base  # 320 tokens; the organism's reward model reads 57
    with pytest.raises(LabError, match="reads a vocabulary of 57 tokens; the model has 320"):
        check_reward(as_reward(org.reward_model), model)


def test_shipped_reward_model_loads_with_its_tokenizer(org):
    reward = load_reward_model(organism_dir("reward"))
    assert reward.tokenizer is not None and reward.vocab == 57
    check_reward(reward, org.pair.base)
    tokens = org.world.draw(3, org.length, torch.Generator().manual_seed(0))[0]
    torch.testing.assert_close(reward(tokens, 8), org.reward_model(tokens, 8).double())


def test_not_a_reward_refused():
    with pytest.raises(LabError, match="Cannot use a int as a reward"):
        as_reward(3)
    assert isinstance(as_reward(Reward(word_reward([1]))), Reward)
