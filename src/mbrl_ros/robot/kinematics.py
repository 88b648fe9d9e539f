"""Batched, differentiable forward kinematics of a RobotDescription (torch).

Kinematics library: pytorch-kinematics 0.10.0 was measured against the compact implementation below
(benchmarks/bench_fk.py: arm7 end-effector positions, float64, CPU, one thread, same run) and was
2.9x / 6.8x / 6.9x / 8.6x slower forward and 1.3x / 3.5x / 3.3x / 5.7x slower forward + backward at
batches of 1 / 1k / 10k / 100k, and agreed only to 2.5e-8 m because its URDF parser rounds joint
origins to float32; so it is not used.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from mbrl_ros.robot.description import ACTUATED_TYPES, RobotDescription

__all__ = ["ForwardKinematics"]


class ForwardKinematics(torch.nn.Module):
    """Batched, differentiable forward kinematics of a RobotDescription (base frame = world frame).

    Each chain joint applies its fixed origin transform, then (if actuated) a rotation about its
    axis by Rodrigues' formula, R_origin·Rot(axis, q) = A + sin(q)·B + (1 − cos q)·C with A =
    R_origin, B = A·K, C = A·K², K = [axis]×, precomputed. Inputs q have shape (..., n) in rad; any
    batch shape. ``points`` maps a name to (link on the chain, offset (3,) in m in that link's
    frame); default ``{'ee': (robot.ee_link, (0, 0, 0))}``. Move or cast with ``.to(device,
    dtype)``; q (a tensor or array) is converted to the module's dtype and device. Rotation matrices
    map link to world frame.
    """

    _A: torch.Tensor  # buffers (see ``constants`` in __init__)
    _t: torch.Tensor
    _A9: torch.Tensor
    _BC9: torch.Tensor
    _axes: torch.Tensor
    _offsets: torch.Tensor

    def __init__(
        self,
        robot: RobotDescription,
        points: dict[str, tuple[str, Sequence[float] | np.ndarray]] | None = None,
        dtype: torch.dtype = torch.float64,
        device: torch.device | str | None = None,
    ):
        super().__init__()
        self.robot = robot
        self.link_names = robot.link_names
        points = {"ee": (robot.ee_link, (0.0, 0.0, 0.0))} if points is None else dict(points)
        unknown = {name: link for name, (link, _) in points.items() if link not in self.link_names}
        if unknown:
            raise ValueError(
                f"points {unknown} are on links outside the chain {list(self.link_names)}"
            )
        self.point_names = tuple(points)
        self._point_links = [self.link_names.index(link) for link, _ in points.values()]
        self._ee_index = self.link_names.index(robot.ee_link)
        # Chain joint j moves link j + 1; _q_index[j] is its column in q, or None for a fixed joint.
        actuated = iter(range(robot.n_joints))
        self._q_index = [next(actuated) if j.type in ACTUATED_TYPES else None for j in robot.chain]
        self._joint_links = [i + 1 for i, j in enumerate(robot.chain) if j.type in ACTUATED_TYPES]
        A = np.stack([j.origin[:3, :3] for j in robot.chain])
        K = np.stack([np.cross(np.eye(3), j.axis) for j in robot.chain])  # K @ v = axis × v
        moving = [link - 1 for link in self._joint_links]
        constants = {
            # per chain joint: origin rotation (J, 3, 3) and translation (J, 3)
            "_A": A,
            "_t": np.stack([j.origin[:3, 3] for j in robot.chain]),
            # per actuated joint: flattened Rodrigues terms A (n, 1, 9), [A·K; A·K²] (n, 2, 9), axis
            # (n, 3)
            "_A9": A[moving].reshape(-1, 1, 9),
            "_BC9": np.stack([A @ K, A @ K @ K], 1)[moving].reshape(-1, 2, 9),
            "_axes": np.stack([robot.chain[j].axis for j in moving]),
            "_offsets": np.array([offset for _, offset in points.values()], float).reshape(
                -1, 3
            ),  # (P, 3)
        }
        for name, value in constants.items():
            self.register_buffer(name, torch.tensor(value, dtype=dtype, device=device))

    def _local_rotations(
        self, q: torch.Tensor, last_link: int, batch_last: bool = False
    ) -> tuple[torch.Tensor, list]:
        """q as a tensor of the module's dtype, and the rotations of chain joints
        0..last_link − 1 (link j + 1 relative to link j): (..., 3, 3) each, or with
        ``batch_last`` (3, 3, batch) for q flattened to (batch, n) (fixed joints: (3, 3, 1))."""
        q = torch.as_tensor(q, dtype=self._A.dtype, device=self._A.device)
        if q.ndim == 0 or q.shape[-1] != self.robot.n_joints:
            raise ValueError(
                f"q must have shape (..., {self.robot.n_joints}), got {tuple(q.shape)}"
            )
        # Local rotations of the n moving joints as one batched GEMM, joint first (contiguous
        # slices):
        # A + [sin q, 1 − cos q] @ [B; C], flattened 3×3 matrices.
        n = q.shape[-1]
        angle = q.reshape(-1, n).T  # (n, batch)
        if batch_last:
            sin_cos = torch.stack([torch.sin(angle), 1.0 - torch.cos(angle)], 1)  # (n, 2, batch)
            flat = torch.baddbmm(self._A9.transpose(1, 2), self._BC9.transpose(1, 2), sin_cos)
            moving = flat.view(n, 3, 3, -1).unbind(0)
            fixed = self._A.unsqueeze(-1).unbind(0)
        else:
            sin_cos = torch.stack([torch.sin(angle), 1.0 - torch.cos(angle)], -1)  # (n, batch, 2)
            flat = torch.baddbmm(self._A9, sin_cos, self._BC9)  # (n, batch, 9)
            moving = flat.view(n, *q.shape[:-1], 3, 3).unbind(0)
            fixed = self._A.unbind(0)
        return q, [
            fixed[j] if i is None else moving[i] for j, i in enumerate(self._q_index[:last_link])
        ]

    def _frames(self, q: torch.Tensor, last_link: int) -> tuple[list, list]:
        """World positions [(..., 3)] and rotations [(..., 3, 3)] of links 0..last_link."""
        q, locals_ = self._local_rotations(q, last_link)
        t = self._t.unbind(0)
        eye = torch.eye(3, dtype=q.dtype, device=q.device)
        positions = [torch.zeros(q.shape[:-1] + (3,), dtype=q.dtype, device=q.device)]
        rotations = [eye.expand(q.shape[:-1] + (3, 3))]
        for j, local in enumerate(locals_):
            if j == 0:  # the root link is the world frame: skip the identity products
                positions.append(t[j].expand_as(positions[0]))
                rotations.append(local.expand_as(rotations[0]))
            else:
                positions.append(positions[-1] + rotations[-1] @ t[j])
                rotations.append(rotations[-1] @ local)
        return positions, rotations

    def link_poses(self, q: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """World positions (..., L, 3) in m and rotation matrices (..., L, 3, 3) of the L chain
        links
        (``link_names`` order, root first) for joint angles q (..., n) in rad."""
        positions, rotations = self._frames(q, len(self.link_names) - 1)
        return torch.stack(positions, -2), torch.stack(rotations, -3)

    def positions(self, q: torch.Tensor) -> torch.Tensor:
        """World positions (..., P, 3) in m of the P ``point_names`` for q (..., n) in rad."""
        positions, rotations = self._frames(q, max(self._point_links))
        return torch.stack(
            [
                positions[link] + rotations[link] @ offset
                for link, offset in zip(self._point_links, self._offsets.unbind(0))
            ],
            -2,
        )

    def ee_position(self, q: torch.Tensor) -> torch.Tensor:
        """World position (..., 3) in m of the ``ee_link`` origin (MuJoCo's 'ee' site), evaluated
        from the tip inwards, p = t₀ + R₀(t₁ + R₁(… + t_e−1)), with the batch as the last,
        contiguous dimension: matrix–vector products only (the planners' costs call this for
        every predicted state)."""
        q, locals_ = self._local_rotations(q, self._ee_index, batch_last=True)
        t = self._t.unsqueeze(-1).unbind(0)  # (3, 1) each
        p = t[self._ee_index - 1] if locals_ else torch.zeros_like(self._t[0]).unsqueeze(-1)
        for j in range(len(locals_) - 2, -1, -1):
            p = t[j] + (locals_[j] * p.unsqueeze(0)).sum(1)
        return p.expand(3, q.reshape(-1, q.shape[-1]).shape[0]).T.reshape(q.shape[:-1] + (3,))

    def _ee_columns(self, q: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """End-effector position (..., 3), the joints' world axes z_j (..., n, 3) and the
        Jacobian's columns J_j = z_j × (ee − o_j) (..., n, 3), o_j the joint's origin."""
        positions, rotations = self._frames(q, self._ee_index)
        links = self._joint_links
        axes = torch.stack(
            [rotations[link] @ axis for link, axis in zip(links, self._axes.unbind(0))], -2
        )
        ee = positions[self._ee_index]
        levers = ee[..., None, :] - torch.stack([positions[link] for link in links], -2)
        return ee, axes, torch.linalg.cross(axes, levers, dim=-1)

    def jacobian(self, q: torch.Tensor) -> torch.Tensor:
        """Position Jacobian d ee_position / dq, shape (..., 3, n) in m/rad (analytic: axis ×
        lever)."""
        return self._ee_columns(q)[2].transpose(-1, -2)

    def ee_derivatives(self, q: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """End-effector position p (..., 3) m, Jacobian (..., 3, n) m/rad and second derivatives
        (..., 3, n, n) m/rad² in closed form: ∂²p/∂q_i∂q_j = z_i × J_j for joint i at or before
        joint j in the chain (and symmetric), as joint i turns axis, origin and end effector of
        joint j alike (all joints revolute)."""
        ee, axes, cols = self._ee_columns(q)
        n = axes.shape[-2]
        z, J = torch.broadcast_tensors(axes[..., :, None, :], cols[..., None, :, :])
        pairs = torch.linalg.cross(z, J, dim=-1)  # (..., n, n, 3): [i, j] = z_i × J_j
        before = torch.ones(n, n, dtype=torch.bool, device=ee.device).triu()[..., None]
        second = torch.where(before, pairs, pairs.transpose(-2, -3))
        return ee, cols.transpose(-1, -2), second.movedim(-1, -3)

    def forward(self, q: torch.Tensor) -> torch.Tensor:
        """Same as ``positions``."""
        return self.positions(q)
