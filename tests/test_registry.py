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
    from midigen.train.registration import should_promote

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


def test_the_registry_pages_carry_the_model_card(registry):
    from midigen.train.registration import describe

    first = _version(registry, {**SAME, "val_nll": 1.0})
    card = "# midigen model (default)\n\n- Styles: chorale, fiddle\n"
    describe(registry, "m", first, card, ["chorale", "fiddle"], "@champion", val_nll=0.8612)
    version = registry.get_model_version("m", first)
    first_line, _, rest = version.description.partition("\n\n")
    assert first_line == "2 styles (chorale, fiddle); held-out val NLL 0.8612 nats/event"
    assert rest.startswith(card)
    assert f"midigen generate --model models:/m/{first} --style chorale" in version.description
    model = registry.get_registered_model("m")
    assert "models:/m@champion" in model.description and card in model.description
    # a version that did not take the alias describes itself only; the model page still shows the champion
    second = _version(registry, {**SAME, "val_nll": 2.0})
    describe(registry, "m", second, card.replace("default", "other"), ["chorale"], None)
    assert "other" in registry.get_model_version("m", second).description
    assert f"now version {first}" in registry.get_registered_model("m").description


def test_a_temporary_store_keeps_its_artifacts_beside_its_database(tmp_path):
    from midigen import tracking

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert tracking.artifact_root(uri) == (tmp_path / "mlartifacts").as_uri()
    tracking.ensure_store(uri)
    from mlflow import MlflowClient

    experiment = MlflowClient(uri).get_experiment(tracking.ensure_experiment("x", uri))
    assert experiment.artifact_location == f"{(tmp_path / 'mlartifacts').as_uri()}/x"
    assert tracking.artifact_root(f"sqlite:///{tracking.repo_root() / 'mlflow.db'}") == \
        (tracking.repo_root() / "mlartifacts").as_uri()  # the default store: unchanged
