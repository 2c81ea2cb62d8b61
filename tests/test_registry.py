"""Champion promotion: `make train` moves @champion only to a model that beats it on the same data."""

from __future__ import annotations

import pytest


@pytest.fixture()
def registry(tmp_path):
    from mlflow import MlflowClient

    from midigen import tracking

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracking.ensure_store(uri)
    client = MlflowClient(uri)
    client.create_registered_model("m")
    client._tmp = tmp_path
    return client


def _version(client, score: dict) -> str:
    v = client.create_model_version("m", source=str(client._tmp))  # a stand-in artifact folder
    for key, value in score.items():
        client.set_model_version_tag("m", v.version, key, str(value))
    return v.version


SAME = {"tokenizer": "seed-abc", "val_files": 155, "val_tokens": 102848}


def _promote(client, score, promote="if_better"):
    from midigen.tracking import should_promote

    ok, why = should_promote(client, "m", "champion", score, promote)
    if ok:
        client.set_registered_model_alias("m", "champion", _version(client, score))
    return ok, why


def test_first_model_takes_a_free_alias_then_only_better_ones_do(registry):
    assert _promote(registry, {**SAME, "val_nll": 1.50})[0]
    ok, why = _promote(registry, {**SAME, "val_nll": 1.60})
    assert not ok and "does not beat" in why and "1.5000" in why
    assert registry.get_model_version_by_alias("m", "champion").tags["val_nll"] == "1.5"
    ok, why = _promote(registry, {**SAME, "val_nll": 1.40})
    assert ok and "beats" in why
    assert registry.get_model_version_by_alias("m", "champion").tags["val_nll"] == "1.4"


def test_scores_on_other_data_are_not_compared(registry):
    _promote(registry, {**SAME, "val_nll": 1.0})
    ok, why = _promote(registry, {**SAME, "val_files": 3, "val_nll": 2.5})  # the user's own corpus
    assert ok and "other data" in why


def test_always_and_bad_policy(registry):
    _promote(registry, {**SAME, "val_nll": 1.0})
    assert _promote(registry, {**SAME, "val_nll": 9.0}, promote="always")[0]
    with pytest.raises(ValueError, match="registry.promote"):
        _promote(registry, {**SAME, "val_nll": 1.0}, promote="sometimes")
