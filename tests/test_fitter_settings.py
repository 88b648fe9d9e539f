"""The fitter's settings (``dynamics.catalog.FitterSettings``, pure core): the dynamics_fitter
node declares them and offline code (``experiments.versions``, benchmarks) builds the same
models from them."""

import pytest
from dynamics_systems import linear_dataset

from mbrl_ros.common.settings import ConfigError
from mbrl_ros.dynamics.base import ModelSignature
from mbrl_ros.dynamics.catalog import FitterSettings
from mbrl_ros.dynamics.ensemble import EnsembleModel, MLPModel

SIGNATURE = ModelSignature.of(linear_dataset(episodes=1, steps=2))


def test_network_options_reach_the_model():
    settings = FitterSettings(
        members=2, hidden=16, layers=2, max_epochs=3, patience=4, max_fit_seconds=0.0, seed=7
    )
    model = settings.new_model(SIGNATURE, "cpu")
    assert isinstance(model, EnsembleModel)
    c = model.config
    assert (c.members, c.hidden, c.layers, c.max_epochs, c.patience) == (2, 16, 2, 3, 4)
    assert (c.max_seconds, c.seed) == (0.0, 7)
    mlp = settings.replace(model="mlp", members=1).new_model(SIGNATURE, "cpu")
    assert isinstance(mlp, MLPModel) and not mlp.config.bootstrap


def test_other_kinds_take_no_network_options():
    model = FitterSettings(model="gp", members=2).new_model(SIGNATURE, "cpu")
    assert model.kind == "gp"


def test_values_are_checked_and_unknown_keys_named():
    with pytest.raises(ConfigError, match="'model' = 'linear' must be one of"):
        FitterSettings(model="linear")
    with pytest.raises(ConfigError, match=r"'val_fraction' = 0.95 is out of range \[0.0, 0.9\]"):
        FitterSettings(val_fraction=0.95)
    with pytest.raises(ConfigError, match="'members' = 2.5 must be an integer"):
        FitterSettings(members=2.5)
    with pytest.raises(
        ConfigError, match="unknown FitterSettings setting.*'max_epoch'.*max_epochs"
    ):
        FitterSettings.from_mapping({"max_epoch": 5}, "fitter.yaml")
