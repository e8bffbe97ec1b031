"""Registry: listings equal ``h2t-store heads``, references resolve as the CLI does, and
``predict`` equals ``h2t-store predict`` within 1e-5."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import cli_json, run_cli
from h2t_store import NotFound, Registry, Store, example_id


@pytest.mark.parametrize("filters", [[], ["--task", "toy"], ["--tag", "stage=raw"], ["--tag", "stage"], ["--alias", "prod"],
                                     ["--sort", "test_accuracy"], ["--sort", "kept_features"], ["--latest"], ["--limit", "2"]])
def test_heads_equal_the_cli_listing(toy, filters):
    expected = cli_json("heads", "--store", toy["store"], *filters)
    kwargs = {}
    for flag, value in zip(filters, filters[1:] + [None]):
        if flag == "--task": kwargs["task"] = value
        if flag == "--tag": kwargs["tags"] = [value]
        if flag == "--alias": kwargs["alias"] = value
        if flag == "--sort": kwargs["sort"] = value
        if flag == "--latest": kwargs["latest"] = True
        if flag == "--limit": kwargs["limit"] = int(value)
    got = Registry(toy["store"]).heads(**kwargs)
    assert [h["entry"] for h in got] == [h["entry"] for h in expected["heads"]]
    assert [(h["tags"], h["aliases"]) for h in got] == [(h["tags"], h["aliases"]) for h in expected["heads"]]
    assert len(got) == (expected["count"] if "--limit" not in filters else len(expected["heads"]))


def test_references_and_head_contents(toy):
    registry = Registry(toy["store"])
    assert registry.resolve("toy") == ("toy", 2)
    assert registry.resolve("toy@prod") == ("toy", 1)
    assert registry.resolve("toy@v2") == ("toy", 2)
    head = registry.head("toy@prod")
    assert head.reference == "toy@v1" and head.class_names == ["cat", "dog", "bird"]
    assert head.normalization == "per_tap_unit_l2_over_kept"
    assert registry.head("toy@v2").normalization == "raw_selected"
    assert head.weights.shape == (len(head.selected), 3) and head.bias.shape == (3,)
    assert head.featureset == toy["featuresets"][64] and head.lineage["dataset"] == "toy"
    assert np.all(np.diff(head.selected) > 0)
    with pytest.raises(NotFound, match="unknown task 'pets'"):
        registry.resolve("pets")
    with pytest.raises(NotFound, match="toy@v9 does not exist"):
        registry.head("toy@v9")
    with pytest.raises(NotFound, match="no alias 'staging'"):
        registry.head("toy@staging")


@pytest.mark.parametrize("reference", ["toy@prod", "toy@v2", "other"])
def test_predict_equals_the_cli(toy, reference):
    registry = Registry(toy["store"])
    expected = cli_json("predict", reference, "--dataset", "toy", "--split", "test", "--store", toy["store"])
    got = registry.predict(reference, dataset="toy", split="test")
    probabilities = np.array([row["probabilities"] for row in expected["predictions"]], dtype=np.float32)
    np.testing.assert_allclose(got.probabilities, probabilities, atol=1e-5, rtol=0)
    np.testing.assert_array_equal(got.labels, [row["label_index"] for row in expected["predictions"]])
    assert got.class_names == expected["class_names"]
    # The same head on a feature matrix (full rows) and on stored examples by id.
    with Store(toy["store"]) as store:
        X, _ = store.read_split(toy["featuresets"][64], "toy", "test")
    np.testing.assert_allclose(registry.predict(reference, features=X).probabilities, probabilities, atol=1e-5, rtol=0)
    ids = [example_id(f"test-{i}") for i in (4, 0, 29)]
    by_id = registry.predict(reference, examples=ids)
    np.testing.assert_allclose(by_id.probabilities, probabilities[[4, 0, 29]], atol=1e-5, rtol=0)


def test_predict_refuses_bad_input(toy):
    registry = Registry(toy["store"])
    with pytest.raises(ValueError, match="exactly one input"):
        registry.predict("toy")
    with pytest.raises(NotFound, match="no split 'val'"):
        registry.predict("toy", dataset="toy", split="val")
    head = registry.head("toy")
    with pytest.raises(ValueError, match=f"reads {len(head.selected)} features"):
        head.predict(np.zeros((2, 3), np.float32))


def test_a_store_without_heads_has_an_empty_registry(tmp_path):
    from conftest import activations, write_raw
    path = tmp_path / "a.safetensors"
    write_raw(path, activations(3, 5), ["a", "b", "c"])
    run_cli("ingest", "--external", "x", "--dataset", "d", "--split", "train", "--target-size", "64",
            "--store", str(tmp_path / "s"), "--quiet", str(path))
    registry = Registry(str(tmp_path / "s"))
    assert registry.heads() == []
    with pytest.raises(NotFound, match="unknown task 'toy'"):
        registry.head("toy")
