"""Every learned model kind carries its ``info`` (the fitter's version, data size, validation
error) through its artifact and is rebuilt by ``model_from_bytes``."""

import json

import numpy as np
import pytest
import safetensors.numpy
import torch
from dynamics_systems import linear_dataset

from mbrl_ros.common.artifacts import META_KEY, ArtifactError
from mbrl_ros.dynamics.base import ModelSignature, model_from_bytes
from mbrl_ros.dynamics.catalog import new_model


@pytest.mark.parametrize("kind", ["ensemble", "mlp", "gp", "sparse-gp", "gmm"])
def test_info_and_predictions_survive_the_artifact(kind):
    torch.manual_seed(0)
    data = linear_dataset(episodes=4, steps=30, noise=0.01)
    model = new_model(
        kind,
        ModelSignature.of(data),
        device="cpu",
        **(
            {"members": 2, "hidden": 16, "layers": 2, "max_epochs": 3}
            if kind in ("ensemble", "mlp")
            else {}
        ),
    )
    train, val = data.split(0.25, seed=0)
    assert not model.fit(train, val).rolled_back
    model.info = {"version": 3, "transitions": len(data), "val_rmse_1step": 0.1}
    again = model_from_bytes(model.to_bytes(), device="cpu")
    assert type(again) is type(model) and again.info == model.info
    s = torch.as_tensor(val.states, dtype=torch.float64)
    a = torch.as_tensor(val.actions, dtype=torch.float64)
    for x, y in zip(model.predict(s, a), again.predict(s, a)):
        torch.testing.assert_close(x, y, rtol=0, atol=0)


@pytest.mark.parametrize("schema", ["mbrl_ros.policy.x", ["mbrl_ros.dynamics.gmm"], None])
def test_an_artifact_of_no_model_schema_is_refused_by_name(schema):
    """A schema that names no model kind, or is not a string at all, is an ArtifactError."""
    data = safetensors.numpy.save(
        {"x": np.zeros(1)}, metadata={META_KEY: json.dumps({"schema": schema})}
    )
    with pytest.raises(ArtifactError, match="is not a dynamics model"):
        model_from_bytes(data)
