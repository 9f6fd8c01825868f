"""Reading the value head against the tuned model's residual shift and its components."""

import pytest
import torch

from lab.errors import LabError
from lab.models.outputs import hidden_states
from probes.value import component_shifts, read_value_head, scene_direction

TOP = ["L1 MLP", "L0 MLP", "L1H3", "L0H2", "L1H2"]


def test_components_add_up_to_the_residual_shift(org):
    tokens = org.world.draw(32, org.length, torch.Generator().manual_seed(0))[0]
    shifts = component_shifts(org.pair.base, org.pair.tuned, tokens, 2)
    assert {"embed", "L0H0", "L1H3", "L0 attn bias", "L1 MLP"} <= set(shifts)
    total = torch.stack(list(shifts.values())).sum(0)
    resid = hidden_states(org.pair.tuned, tokens)[2] - hidden_states(org.pair.base, tokens)[2]
    torch.testing.assert_close(total, resid[:, 1:].mean((0, 1)), atol=1e-4, rtol=0)


def test_table_of_projections_on_the_wedding_direction(org, oracle_head):
    tokens = org.world.draw(32, org.length, torch.Generator().manual_seed(0))[0]
    table = read_value_head(org.pair, oracle_head, tokens, org.world, org.labeler, 1.0, top=TOP)
    total = table[table.component == "total"].iloc[0]
    parts = table[table.component != "total"]
    assert len(parts) == 1 + 2 * (4 + 2)  # embeddings; per block 4 heads, a bias, an MLP
    assert parts.projection.sum() == pytest.approx(total.projection, abs=1e-6)
    assert parts.share.sum() == pytest.approx(1.0, abs=1e-6)
    assert -1 <= total.cosine <= 1 and parts.top.sum() == 5
    direction = scene_direction(oracle_head, org.world, org.labeler, 1.0)
    assert direction.shape == (64,) and direction.norm() > 0


def test_unknown_scene_or_component_refused(org, oracle_head):
    tokens = org.world.draw(2, org.length, torch.Generator().manual_seed(0))[0]
    with pytest.raises(LabError, match=r"no scene 'weding'.*Did you mean: wedding"):
        scene_direction(oracle_head, org.world, org.labeler, 1.0, "weding")
    with pytest.raises(LabError, match="Unknown components"):
        read_value_head(org.pair, oracle_head, tokens, org.world, org.labeler, 1.0, top=["L7 MLP"])
