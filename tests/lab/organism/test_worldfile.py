"""Custom worlds from files: Mess3 trained from the CLI, exact beliefs against a direct filter,
the edge-to-state expansion against enumeration, and bad files refused naming the key."""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from lab import load_pair
from lab.cli import run
from lab.errors import LabError
from lab.models.checkpoints import data_dir
from lab.organism.world import HMM
from lab.organism.worldfile import EdgeHMM, load_world, read_world

MESS3 = data_dir() / "worlds" / "mess3.json"


def mess3_matrices(x: float = 0.05, alpha: float = 0.85) -> np.ndarray:
    """Mess3 written out from its definition: T[k][s, t] = P(emit k, go to t | s)."""
    y, beta = 1 - 2 * x, (1 - alpha) / 2
    t = np.zeros((3, 3, 3))
    for k, s, d in itertools.product(range(3), repeat=3):
        t[k, s, d] = (alpha if d == k else beta) * (y if d == s else x)
    return t


def direct_beliefs(t: np.ndarray, initial: np.ndarray, words: np.ndarray) -> np.ndarray:
    """P(state after t words | words 1..t) by Bayes' rule, one sequence at a time."""
    out = [initial]
    eta = initial
    for w in words:
        eta = eta @ t[w]
        eta = eta / eta.sum()
        out.append(eta)
    return np.stack(out)


def test_the_shipped_mess3_file_is_mess3():
    world = read_world(MESS3)
    assert isinstance(world, EdgeHMM) and world.words == ("a", "b", "c")
    assert np.allclose(world.transitions.numpy(), mess3_matrices(), atol=1e-12)
    assert np.allclose(world.initial.numpy(), 1 / 3)


def test_train_a_base_on_mess3_from_the_cli_and_check_its_beliefs(tmp_path):
    out = tmp_path / "mess3"
    args = ["organism", "train", "--quick", "--world", str(MESS3), "--out", str(out)]
    assert run([*args, "--steps", "20", "--length", "8"]) == 0
    card = json.loads((out / "base" / "card.json").read_text())
    assert card["config"]["steps"] == 20 and card["length"] == 8
    assert "--world" in card["command"] and card["world_source"]["kind"] == "edge"
    assert 0.0 < card["metrics"]["belief_probe_r2"] <= 1.0
    assert (out / "base" / "model.safetensors").exists() and not (out / "rlhf").exists()
    # the world the base was trained on (from its card) filters exactly like Mess3 itself
    world = HMM.from_dict(card["world"])
    edge = read_world(MESS3)
    sample = world.sample(16, 8, torch.Generator().manual_seed(1))
    beliefs = edge.state_beliefs(sample.forward.beliefs).numpy()
    t = mess3_matrices()
    for b in range(16):
        words = sample.tokens[b, 1:].numpy() - 1
        expected = direct_beliefs(t, np.full(3, 1 / 3), words)
        assert np.allclose(beliefs[b], expected, atol=1e-12)
        # and the next word's distribution is the belief pushed through the emissions
        next_words = expected @ t.sum(2).T
        assert np.allclose(sample.forward.next_token_logprobs[b, :, 1:].exp(), next_words)
    assert torch.allclose(edge.beliefs(sample.tokens), torch.tensor(beliefs), atol=1e-12)
    # the checkpoint loads as a lab model with the world's vocabulary
    pair = load_pair(out / "base", out / "base", device="cpu")
    assert pair.tokenizer.convert_ids_to_tokens([0, 1, 2, 3]) == ["<bos>", "a", "b", "c"]


def test_edge_expansion_equals_enumeration_and_drops_impossible_pairs():
    t = np.zeros((2, 3, 3))  # 2 words, 3 states; state 0 never moves to state 2
    t[0] = [[0.3, 0.2, 0.0], [0.1, 0.1, 0.2], [0.25, 0.05, 0.1]]
    t[1] = [[0.4, 0.1, 0.0], [0.2, 0.3, 0.1], [0.1, 0.2, 0.3]]
    initial = np.array([0.5, 0.3, 0.2])
    edge = EdgeHMM(torch.tensor(t), torch.tensor(initial))
    world = edge.to_hmm()
    assert world.n_scenes == 8 and "s0>s2" not in world.scenes
    for length in (1, 2, 4):
        for words in itertools.product(range(2), repeat=length):
            p = initial.copy()
            for w in words:
                p = p @ t[w]
            tokens = torch.tensor([[0, *(w + 1 for w in words)]])
            assert world.log_likelihood(tokens).item() == pytest.approx(math.log(p.sum()))
    stationary = EdgeHMM(torch.tensor(t)).initial.numpy()
    assert np.allclose(stationary @ t.sum(0), stationary)


def test_state_form_and_safetensors_form_give_the_same_world(tmp_path, tiny_world):
    path = tmp_path / "tiny.json"
    path.write_text(json.dumps(tiny_world.to_dict()))  # a card's "world" is a world file
    assert load_world(path).to_dict() == tiny_world.to_dict()
    edge = read_world(MESS3)
    st = tmp_path / "mess3.safetensors"
    save_file(
        {"transitions": edge.transitions, "initial": edge.initial},
        str(st),
        metadata={"words": json.dumps(list(edge.words)), "states": json.dumps(["A", "B", "C"])},
    )
    assert load_world(st).to_dict() == load_world(MESS3).to_dict()


def _edge(**change):
    d = json.loads(MESS3.read_text())
    d.update(change)
    return d


BAD = [
    (_edge(transitions=[[0.5, 0.5]]), r"'transitions' must have shape \(word, state, state\)"),
    (_edge(transitions=(-mess3_matrices()).tolist()), r"'transitions' must hold .* >= 0"),
    (_edge(transitions=(mess3_matrices() * 2).tolist()), "state 0 sums to 2.000000"),
    (_edge(initial=[0.5, 0.5]), r"'initial' must have shape \(3,\)"),
    (_edge(initial=[0.5, 0.5, 0.5]), "'initial'.* rows must sum to 1"),
    (_edge(words=["a", "b"]), "'words' must be 3 distinct names"),
    (_edge(words="abc"), "'words' must be a list of strings"),
    (_edge(emission=[[1.0]]), "Unknown key.* emission for a 'edge' world"),
    (_edge(kind="edges"), "'kind' must be 'state' or 'edge'"),
    ({"kind": "state", "transition": [[1.0]]}, "needs the key.* emission, initial"),
    (
        {"transition": [[1.0]], "emission": [[0.5, 0.6]], "initial": [1.0]},
        "HMM emission rows must sum to 1",
    ),
    (
        {"transition": [[1.0]], "emission": [["x"]], "initial": [1.0]},
        "'emission' must be a numeric array",
    ),
    ([1, 2], "must hold one object"),
]


@pytest.mark.parametrize(("content", "message"), BAD)
def test_bad_world_files_are_refused_naming_the_file_and_key(tmp_path, content, message):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(content))
    with pytest.raises(LabError, match=message) as e:
        read_world(path)
    assert str(e.value).startswith(f"World file {path}: ")


def test_unreadable_world_files_and_the_cli_error(tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_bytes(b"\xff{")
    with pytest.raises(LabError, match="not valid JSON"):
        read_world(bad)
    with pytest.raises(LabError, match="No world file at"):
        read_world(tmp_path / "none.json")
    st = tmp_path / "bad.safetensors"
    st.write_bytes(b"garbage")
    with pytest.raises(LabError, match="not a readable safetensors file"):
        read_world(st)
    out = tmp_path / "never"
    assert run(["organism", "train", "--world", str(bad), "--out", str(out)]) == 1
    assert "World file" in capsys.readouterr().err and not out.exists()
    assert run(["organism", "train", "--world", str(MESS3), "--steps", "0"]) == 1
    assert "--steps must be at least 1" in capsys.readouterr().err


def test_organism_commands_use_the_data_folder(tmp_path, monkeypatch, capsys):
    """The default organism folder follows $STEERLAB_DATA (it was hard-coded to data/)."""
    monkeypatch.setenv("STEERLAB_DATA", str(tmp_path / "elsewhere"))
    assert run(["organism", "eval", "--texts", "8", "--prompts", "8"]) == 1
    err = capsys.readouterr().err
    assert str(Path(tmp_path / "elsewhere" / "organism")) in err and "not an organism folder" in err


def test_a_world_never_overwrites_the_shipped_organism(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("STEERLAB_DATA", str(tmp_path))
    shipped = tmp_path / "organism"
    assert run(["organism", "train", "--world", str(MESS3), "--out", str(shipped)]) == 1
    assert "shipped organism's folder" in capsys.readouterr().err and not shipped.exists()
