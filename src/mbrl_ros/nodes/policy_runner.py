"""Node ``policy_runner``: runs a network policy u = π(x, target) against the arm at the control
rate, behind the same safety layer, e-stop and watchdogs as the executor
(``nodes.safe_command_node``).

Subscribes ``/joint_states``, ``/mbrl/target`` (geometry_msgs/PointStamped; ``header.stamp`` = the
stamp from which the target holds, so targets can be sent ahead of their episode: each state uses
the newest target not after its stamp) and ``/mbrl/policy`` (policy artifacts of
``mbrl_ros.policy.network``, std_msgs/UInt8MultiArray, transient local like ``/mbrl/controller``),
or loads ``policy_file`` at start. Publishes ``/effort_controller/commands`` (torques in
``joint_names`` order, tagged as the executor's: in ``sync`` mode with the stamp of the joint state
they answer, so a lockstep sim accepts them, in ``realtime`` mode with the time they are sent,
holds included, so the fitter and recorder see when each command took effect); services
``~/estop`` (std_srvs/SetBool: true latches the hold, false releases it) and ``~/save_policy``
(std_srvs/Trigger: the policy in use to the file ``policy_path``); ``/diagnostics`` with
the safety events, the policy in use and the compute per step.

* ``sync`` (lockstep graphs): a state waits, with nothing published, until a policy and a target
  for it are there; then every state is answered at once.
* ``realtime``: without a policy or a target the hold law is published.

**Homing** (real-time graphs on a robot without resets): a homing controller from the episode
manager on ``/mbrl/homing_controller`` (``mbrl_ros.control.homing``) that is valid at a state's
stamp answers it instead of the policy, as in the executor, so the arm is brought to each episode's
start pose; the manager cuts it at the episode's start and the policy takes over.

A policy for another robot, other joints or their order, another observation layout or another
control period is refused: from the topic it is counted (``rejected_policy``) and the previous
policy stays; from ``policy_file`` the node does not start. A non-finite torque from the policy
gives the safe hold (``non_finite_command``).

``robot_compensates_gravity: false`` (a robot whose effort interface does not cancel the arm's
weight): the URDF's gravity torque g(q) is added to every command, the holds included
(``nodes.safe_command_node``); the policy itself acts on a weightless arm, as the learned models.
"""

from __future__ import annotations

import sys

import numpy as np
from std_msgs.msg import UInt8MultiArray

from mbrl_ros.common.artifacts import ArtifactError, read_file
from mbrl_ros.common.msgconv import JointSample
from mbrl_ros.control.plausibility import TargetGate
from mbrl_ros.data.topics import POLICY
from mbrl_ros.nodes.intake import subscribe
from mbrl_ros.nodes.messages import LATCHED_QOS
from mbrl_ros.nodes.params import ConfigError, Param
from mbrl_ros.nodes.run_control import add_save_service, save_path_param
from mbrl_ros.nodes.runner import run_node
from mbrl_ros.nodes.safe_command_node import SAFETY_PARAMS, SafeCommandNode
from mbrl_ros.nodes.targets import TargetSchedule, subscribe_targets
from mbrl_ros.policy.network import FrozenPolicy, GoalPolicy, PolicyError

PARAMS = SAFETY_PARAMS + [
    Param(
        "mode",
        "sync",
        "sync (wait for a policy and a target; lockstep) or realtime",
        choices=("sync", "realtime"),
    ),
    Param("policy_file", "", "policy artifact to run from the start; '' = wait for /mbrl/policy"),
    save_path_param("policy"),
]


class PolicyRunnerNode(SafeCommandNode):
    """The policy runner; ``node_kwargs`` go to rclpy's Node (parameter_overrides, context...)."""

    WAITING = "waiting for a policy and a target for the current state"

    def __init__(self, **node_kwargs):
        super().__init__("policy_runner", PARAMS, "policy runner", **node_kwargs)
        self.policy: GoalPolicy | None = None
        self.frozen: FrozenPolicy | None = None
        self.policy_source = ""
        self.targets = TargetSchedule(TargetGate.for_robot(self.robot))
        if self.p.policy_file:
            try:
                self._use(GoalPolicy.from_bytes(read_file(self.p.policy_file)), "file")
            except (OSError, ArtifactError, PolicyError) as exc:
                raise ConfigError(
                    f"parameter 'policy_file' = {self.p.policy_file!r}: {exc}"
                ) from None
        subscribe(
            self,
            self.diag,
            UInt8MultiArray,
            POLICY,
            LATCHED_QOS,
            self._on_policy,
            self._read_policy,
            "policy",
        )
        subscribe_targets(self, self.diag, self.targets, lambda _: self._answer_if_ready())
        add_save_service(
            self, "policy", lambda: self.policy.to_bytes() if self.policy is not None else None
        )
        self.get_logger().info(
            f"{self.robot.name}: {self.n} joints, {self.p.mode} mode, hold law "
            f"{self.p.hold_law}; policy "
            + (
                f"from {self.p.policy_file}"
                if self.policy
                else f"from {self.resolve_topic_name(POLICY)} (waiting)"
            )
        )

    # -- inputs ----------------------------------------------------------------------------------
    def _use(self, policy: GoalPolicy, source: str) -> None:
        """Run ``policy`` from now on; PolicyError if it is not for this robot, its joints in
        this order and this control period."""
        policy.signature.check(self.robot.name, self.names, self.p.control_period)
        self.policy, self.frozen, self.policy_source = policy, policy.frozen(), source
        self.diag.count("policies")

    def _read_policy(self, msg: UInt8MultiArray) -> GoalPolicy:
        """A policy artifact for this robot, joints and control period (PolicyError if not)."""
        policy = GoalPolicy.from_bytes(bytes(msg.data))
        policy.signature.check(self.robot.name, self.names, self.p.control_period)
        return policy

    def _on_policy(self, policy: GoalPolicy) -> None:
        self._use(policy, "topic")
        self.get_logger().info(
            f"new policy from {self.resolve_topic_name(POLICY)} (hidden {policy.hidden})"
        )
        self._answer_if_ready()

    def _answer_if_ready(self) -> None:
        if (
            self.pending is not None
            and self.frozen is not None
            and self.targets.at(self.pending.stamp_ns) is not None
        ):
            self._answer_pending()

    # -- acting ----------------------------------------------------------------------------------
    def _answer(self, state: JointSample, now: int, start_ns: int) -> None:
        if self._answer_homing(state, now, start_ns):  # bring the arm to the start pose
            return
        target = self.targets.at(state.stamp_ns)
        ready = self.frozen is not None and target is not None
        if not ready and not self.realtime and not self.safety.estopped:
            self.pending = state  # sync: wait (publish nothing) for a policy and a target
            self.diag.count("waiting")
            return
        self.pending = None
        u, why = None, "no_policy" if self.frozen is None else "no_target"
        if self.frozen is not None and target is not None:  # ready
            with np.errstate(over="ignore", invalid="ignore"):  # non-finite u: the safety hold
                u = self.frozen.act(state.position, state.velocity, target)
        self._send(
            state.position,
            state.velocity,
            u,
            state.stamp_ns,
            now=now if self.realtime else None,
            why=why,
        )
        self._record_compute(start_ns)

    def _status(self) -> tuple[str, dict]:
        sig = self.policy.signature if self.policy else None
        values = {
            "policy_source": self.policy_source or "none",
            "policy_hidden": list(self.policy.hidden) if self.policy else [],
            "policy_dt": sig.dt if sig else 0.0,
        }
        if self.homing_active:
            return "homing", values
        if self.policy is None:
            return "no policy yet", values
        if self.last_state is not None and self.targets.at(self.last_state.stamp_ns) is None:
            return "no target yet", values
        return "running", values


def main(args=None) -> int:
    return run_node(lambda: PolicyRunnerNode(), "policy_runner", args)


if __name__ == "__main__":
    sys.exit(main())
