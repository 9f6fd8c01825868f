"""The shipped organism and a small oracle head on it, made once per session."""

import pytest
import torch

import lab.organism
from probes.value import fit_q_head, oracle_tokens, oracle_values

BETAS = (0.3, 1.0, 3.0)


@pytest.fixture(scope="session")
def betas():
    return BETAS


@pytest.fixture(scope="session")
def org():
    return lab.organism.load()


@pytest.fixture(scope="session")
def oracle_data(org):
    """(tokens, exact Q*) on 48 world sequences plus 48 pi* continuations per beta."""
    g = torch.Generator().manual_seed(0)
    tokens = oracle_tokens(org.world, org.labeler, 48, org.length, org.prompt_words, BETAS, g)
    return tokens, oracle_values(org.world, org.labeler, tokens, BETAS, org.length)


@pytest.fixture(scope="session")
def oracle_head(org, oracle_data):
    tokens, values = oracle_data
    return fit_q_head(org.pair.base, tokens, values, 2, betas=BETAS)
