"""Value probes: a linear Q head on the base's residual stream, and the value-guided sampler.

    pi_Q(x | h) ∝ p_base(x | h) exp(Q_beta(h, x) / beta)

Quick tour::

    from probes.value import oracle_tokens, oracle_values, fit_q_head, q_head_r2, guided_policy
    org = lab.organism.load(); base = org.pair.base; betas = (0.1, 0.3, 1.0)
    tokens = oracle_tokens(org.world, org.labeler, 256, org.length, org.prompt_words, betas)
    values = oracle_values(org.world, org.labeler, tokens, betas, org.length)   # exact Q*
    head = fit_q_head(base, tokens, values, layer=2, betas=betas)
    # or fitted so that the sampler matches pi* (KL objective; needs log pi*, oracle only)
    star = torch.stack([PiStar(org.world, org.labeler, b, org.length).next_token_logprobs(tokens)
                        for b in betas], 2)
    head = fit_q_head(base, tokens, values, 2, betas=betas, objective="kl", target_logprobs=star)
    q_head_r2(base, tokens, values, betas=betas)                # R² by layer (centred Q*)
    policy = guided_policy(base, head, beta=0.2)                # any beta in the grid's range
    policy.sample(prompts, org.length, generator)
    head.save("runs/qhead"); QHead.load("runs/qhead")           # safetensors + json
    read_value_head(org.pair, head, tokens, org.world, org.labeler, beta=0.3, top=["L1 MLP"])
    # the practitioner: the reward model and base samples only (fitted soft-Bellman iteration)
    samples = as_policy(base).sample(prompts, org.length, generator)
    head = fit_practitioner_head(base, org.reward_model, samples, betas, start=org.prompt_words + 1)
"""

from probes.value.fit import OBJECTIVES, centre, fit_observed, fit_q_head, head_r2, q_head_r2
from probes.value.guided import MASS_WARNING, TopKMassWarning, guided_logprobs, guided_policy
from probes.value.head import QHead, check_beta
from probes.value.oracle import oracle_tokens, oracle_values
from probes.value.practitioner import fit_practitioner_head, practitioner_values
from probes.value.read import component_shifts, read_value_head, scene_direction
from probes.value.residual import fingerprint, logprobs_and_residual
from probes.value.reward import Reward, as_reward, check_reward, load_reward_model
from probes.value.steer import (
    base_samples,
    organism_head,
    steer_model,
    steer_organism,
    word_reward,
)

__all__ = [
    "MASS_WARNING",
    "OBJECTIVES",
    "QHead",
    "Reward",
    "TopKMassWarning",
    "as_reward",
    "base_samples",
    "centre",
    "check_beta",
    "check_reward",
    "component_shifts",
    "fingerprint",
    "fit_observed",
    "fit_practitioner_head",
    "fit_q_head",
    "guided_logprobs",
    "guided_policy",
    "head_r2",
    "load_reward_model",
    "logprobs_and_residual",
    "oracle_tokens",
    "oracle_values",
    "organism_head",
    "practitioner_values",
    "q_head_r2",
    "read_value_head",
    "scene_direction",
    "steer_model",
    "steer_organism",
    "word_reward",
]
