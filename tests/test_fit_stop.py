"""``DynamicsModel.stop_fits``, the one cooperative stop of every model kind's fit (the fitter node
calls it from ``close()``, so its fit thread ends within its bound): once called, a fit raises
FitStopped at its first batch, EM iteration or evaluation and leaves the fitted model exactly as
it was."""

from __future__ import annotations

import pytest
import torch

from mbrl_ros.dynamics.base import FitStopped, ModelSignature
from mbrl_ros.dynamics.catalog import NETWORK_KINDS, available_kinds, new_model
from mbrl_ros.dynamics.simdata import random_torque_dataset
from mbrl_ros.robot.description import load_robot

torch.set_num_threads(1)


@pytest.mark.parametrize("kind", available_kinds())
def test_a_stopped_fit_raises_and_leaves_the_model_as_it_was(kind):
    data = random_torque_dataset(load_robot("arm2"), 3, 40, seed=1)
    options = {"hidden": 8, "layers": 1, "max_epochs": 3} if kind in NETWORK_KINDS else {}
    model = new_model(kind, ModelSignature.of(data), "cpu", "arm2", **options)
    model.fit(data, None)
    before = model.to_bytes()
    model.stop_fits()
    with pytest.raises(FitStopped, match=f"{kind} fit stopped on request"):
        model.fit(data, None)
    assert model.to_bytes() == before
    with pytest.raises(FitStopped):  # and every later fit (the process is shutting down)
        model.fit(data, None, warm_start=True)
    assert model.to_bytes() == before
