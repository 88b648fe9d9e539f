"""State features computed from the joint positions, appended as extra state columns."""

from __future__ import annotations

import torch

from mbrl_ros.data.dataset import Dataset
from mbrl_ros.data.errors import DataError
from mbrl_ros.robot.description import RobotDescription
from mbrl_ros.robot.kinematics import ForwardKinematics

EE_NAMES = ("ee/x", "ee/y", "ee/z")


def add_ee_features(dataset: Dataset, robot: RobotDescription) -> Dataset:
    """``dataset`` with the end-effector position (m, base frame) of s and s' appended as the
    columns ``ee/x, ee/y, ee/z`` (batched forward kinematics of ``robot``)."""
    if sorted(dataset.joint_names) != sorted(robot.joint_names):
        raise DataError(
            f"end-effector features need every joint of robot '{robot.name}' "
            f"{list(robot.joint_names)}; the dataset has {list(dataset.joint_names)}"
        )
    if set(EE_NAMES) & set(dataset.state_names):
        raise DataError("the dataset already has end-effector features")
    columns = [dataset.state_names.index(f"position/{j}") for j in robot.joint_names]
    fk = ForwardKinematics(robot)
    with torch.no_grad():
        ee = [
            fk.ee_position(torch.from_numpy(x[:, columns])).numpy()
            for x in (dataset.states, dataset.next_states)
        ]
    return dataset.with_state_columns(EE_NAMES, *ee)
