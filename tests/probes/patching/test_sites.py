"""Site kinds, sweeps of sites, and the lane layout that packs their cones."""

import pandas as pd
import pytest
import torch

from lab import LabError, load_pair
from probes.patching._engine.cone import cone_positions
from probes.patching._engine.packing import pack_lanes
from probes.patching.sites import SITE_KINDS, Site, enumerate_sites, patch_activation, site_kind


@pytest.fixture(scope="module")
def llama(pair_dirs):
    return load_pair(*pair_dirs("llama"), device="cpu").base


def test_every_kind_has_a_hook_in_llama(llama):
    for name in SITE_KINDS:
        assert site_kind(name, llama).hook_name(1) in llama.hook_dict


def test_sweeps_use_key_value_heads_for_keys_and_values(llama):
    keys = list(enumerate_sites("k", llama, 5, by_position=True))
    queries = list(enumerate_sites("q", llama, 5, by_position=False))
    assert len(keys) == 2 * 2 * 5  # layers x kv heads x positions
    assert len(queries) == 2 * 4
    assert keys[0] == Site("k", 0, 0, 0) and queries[-1] == Site("q", 1, 3, None)


def test_sweep_refuses_heads_out_of_range(llama):
    with pytest.raises(LabError, match=r"head \[3\] out of range"):
        list(enumerate_sites("v", llama, 5, by_position=False, heads=[0, 3]))


def test_patch_activation_writes_only_the_site():
    act, source = torch.zeros(2, 4, 3, 5), torch.ones(2, 6, 3, 5)
    patch_activation(act, source, Site("z", 0, head=1, position=3), offset=2)
    assert act.sum() == 2 * 5 and act[:, 1, 1].eq(1).all()
    whole = torch.zeros(2, 4, 7)
    patch_activation(whole, torch.arange(6.0)[None, :, None].expand(2, 6, 7), Site("mlp_out", 0), 2)
    assert whole[0, :, 0].tolist() == [2, 3, 4, 5]


def test_lanes_pack_segments_without_overlap():
    n_pos, starts = 6, [0, 5, 1, 4, 3, 2]
    lanes = pack_lanes([range(s, n_pos) for s in starts], n_pos, batch=2)
    assert lanes.width <= n_pos
    assert lanes.n_lanes == 4  # 21 rows in lanes of 6, first fit longest first
    for g, (lane, first, n) in enumerate(lanes.where):
        assert n == n_pos - starts[g]
        assert lanes.segment[lane, first : first + n].eq(g).all()
        assert lanes.positions[lane, first : first + n].tolist() == list(range(starts[g], n_pos))


def test_lane_mask_sees_what_its_segment_does_not_recompute_and_its_own_rows():
    lanes = pack_lanes([[4, 5], [2, 5]], 6, batch=1)  # one lane: positions [4, 5, 2, 5]
    assert lanes.positions[0].tolist() == [4, 5, 2, 5]
    mask = lanes.mask(None)[0, 0] == 0  # row x (6 cached keys + 4 lane keys)
    last_of_second = 3  # position 5 of the segment {2, 5}
    assert mask[last_of_second, :6].tolist() == [True, True, False, True, True, False]
    assert mask[last_of_second, 6:].tolist() == [False, False, True, True]


def test_cone_positions_trim_the_last_block_to_what_is_read():
    n_layers, n_pos, read = 3, 8, [7]
    assert cone_positions(Site("resid_pre", 1, position=2), n_layers, n_pos, read) == list(
        range(2, 8)
    )
    assert cone_positions(Site("resid_pre", 2, position=2), n_layers, n_pos, read) == [2, 7]
    assert cone_positions(Site("k", 2, 0, position=7), n_layers, n_pos, read) == [7]
    assert cone_positions(Site("z", 2, 1, position=3), n_layers, n_pos, read) == []
    assert cone_positions(Site("mlp_out", 2), n_layers, n_pos, read) == [7]
    assert cone_positions(Site("v", 2, 1), n_layers, n_pos, read) == list(range(8))


def test_query_layout_splits_a_crowded_lane_and_keeps_its_keys():
    # One lane of 2-row segments (8 reads) and one long segment (1 read), 40 keys per lane. At
    # d_model 64 a query lane costs 2.5 rows: width 4 (lanes of 1, 4 and 4 reads) costs
    # 3 * 6.5, less than width 8 (2 * 10.5) or 2 (5 * 4.5). At d_model 16 rows are cheap
    # against lanes (40 rows each) and the crowded lane stays whole.
    segments = [[p, 19] for p in range(1, 9)] + [list(range(20))]
    lanes = pack_lanes(segments, 20, batch=3, starts=[1] * 8 + [0])
    assert lanes.n_lanes == 2
    reads = [
        (lane, row) for g in range(9) for lane, row in zip(*lanes.locate(g, [19]), strict=True)
    ]
    whole = lanes.queries(reads, d_model=16)
    assert whole.width == 8 and whole.n_lanes == 2
    query = lanes.queries(reads, d_model=64)
    assert query.width == 4 and query.n_lanes == 3
    for g in range(len(segments)):
        (lane,), (row,) = query.locate(g, [19])
        source = int(query.source[lane])
        assert query.positions[lane, row] == 19 and query.segment[lane, row] == g
        assert query.keys[0][lane].tolist() == lanes.positions[source].tolist()
        assert query.starts[lane] == lanes.starts[source]


def test_site_from_row_reads_table_rows_and_component_rows():
    table = pd.DataFrame(
        {
            "site": ["z", "mlp_out", "resid_pre"],
            "layer": [1, 0, 2],
            "head": pd.array([3, None, None], dtype="Int64"),
            "position": pd.array([None, None, 4], dtype="Int64"),
        }
    )
    expected = [Site("z", 1, 3), Site("mlp_out", 0), Site("resid_pre", 2, None, 4)]
    assert [Site.from_row(r) for r in table.itertuples()] == expected
    assert [Site.from_row(r) for _, r in table.iterrows()] == expected
    floats = pd.DataFrame({"site": ["z", "mlp_out"], "layer": [0, 1], "head": [2.0, float("nan")]})
    assert [Site.from_row(r) for r in floats.itertuples()] == [Site("z", 0, 2), Site("mlp_out", 1)]
    components = pd.DataFrame({"kind": ["head", "mlp"], "layer": [1, 1], "head": [0, None]})
    assert [Site.from_row(r) for r in components.itertuples()] == [
        Site("z", 1, 0),
        Site("mlp_out", 1),
    ]
