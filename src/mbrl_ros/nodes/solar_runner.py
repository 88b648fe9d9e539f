"""Node ``solar_runner``: SOLAR's latent linear-Gaussian controller on the arm, from camera images,
behind the same safety layer, e-stop and watchdogs as the executor (``nodes.safe_command_node``).

The learner's input is the camera only: each command is ``solar.ImageController``'s torque for the
frame stack of ``/camera/image_raw`` (sensor_msgs/Image, rgb8) encoded by the SOLAR model. Joint
states (``/joint_states``) go only to the safety layer (limit guards, hold laws, watchdogs) and
time the commands: each joint state is answered with the command computed from the image of the
same stamp (the simulator stamps its frames with the state's stamp), tagged as the executor's
(sync: the state's stamp; realtime: the send time).

The model (``mbrl_ros/solar_model`` artifact, ``SolarModel.to_bytes``) comes from
``model_file`` or ``/mbrl/solar_model``; the latent controller (a controller artifact with
``state_layout`` ``solar_latent``, dx = the model's latent size) from ``controller_file`` or
``/mbrl/controller`` (both std_msgs/UInt8MultiArray, transient local). A controller or model that
does not fit the other, the joints or the effort limits is refused: from a file the node does not
start, from a topic it is counted (``rejected_...``) and the previous one stays.

Controller step: with ``episode_steps`` N > 0 the step within the simulator's automatic episode
(``episodes.EpisodeClock``; the frame stack restarts at each episode); with 0 the controller's
own time index (its ``start_ns``; the frame stack restarts with each new controller). Past the
controller's last step the hold law is published (``plan_expired``).

* ``sync`` (lockstep graphs): a state waits, with nothing published, until a model and a
  controller are there and the image of its stamp has come; an image that has not come within
  ``image_timeout`` (wall s) gives the hold (``stale_image``) and restarts the frame stack.
* ``realtime``: the newest image is used if it is at most ``max_image_age`` older than the
  state; otherwise, or without a model or controller, the hold law is published.
"""

from __future__ import annotations

import sys
import time
from collections import OrderedDict

import numpy as np
import torch
from rclpy.clock import Clock, ClockType
from sensor_msgs.msg import Image
from std_msgs.msg import UInt8MultiArray

from mbrl_ros.common.artifacts import ArtifactError, read_file
from mbrl_ros.common.msgconv import JointSample, read_image, seconds_to_ns, stamp_to_ns
from mbrl_ros.control.controller import LinearGaussianController
from mbrl_ros.data.topics import CONTROLLER, IMAGES, SOLAR_MODEL
from mbrl_ros.nodes.intake import subscribe
from mbrl_ros.nodes.messages import LATCHED_QOS, NEWEST_ONLY, STATE_QOS
from mbrl_ros.nodes.params import ConfigError, Param
from mbrl_ros.nodes.runner import run_node
from mbrl_ros.nodes.safe_command_node import SAFETY_PARAMS, SafeCommandNode
from mbrl_ros.solar.controller import LATENT_LAYOUT, ImageController
from mbrl_ros.solar.model import SolarModel
from mbrl_ros.tasks.episodes import EpisodeClock

IMAGES_KEPT = 8  # sync: images waiting for their joint state (by stamp)

PARAMS = SAFETY_PARAMS + [
    Param(
        "mode",
        "sync",
        "sync (wait for the image of each state; lockstep) or realtime",
        choices=("sync", "realtime"),
    ),
    Param(
        "model_file",
        "",
        "SOLAR model artifact to run from the start; '' = wait for /mbrl/solar_model",
    ),
    Param(
        "controller_file",
        "",
        "latent controller artifact (state_layout solar_latent); '' = wait for /mbrl/controller",
    ),
    Param(
        "episode_steps",
        0,
        "the simulator's automatic episodes (its value): controller step = "
        "step in the episode; 0 = the controller's own start",
        (0, 10**7),
    ),
    Param("stochastic", False, "sample u ~ N(mean, Σ_t) instead of the mean"),
    Param("seed", 0, "seed of the exploration noise (mixed with the episode)", (0, 2**31 - 1)),
    Param(
        "image_timeout",
        0.5,
        "sync: wall time to wait for the image of a state before the hold (s)",
        (1e-3, 600.0),
    ),
    Param(
        "max_image_age",
        0.05,
        "realtime: hold when the newest image is older than the state by more than this (s)",
        (0.0, 3600.0),
    ),
    Param("torch_threads", 1, "CPU threads of the encoder (torch.set_num_threads)", (1, 256)),
]


class SolarRunnerNode(SafeCommandNode):
    """The SOLAR runner; ``node_kwargs`` go to rclpy's Node (parameter_overrides, context...)."""

    WAITING = "waiting for a model, a controller and the image of the current state"

    def __init__(self, **node_kwargs):
        super().__init__("solar_runner", PARAMS, "solar runner", **node_kwargs)
        p = self.p
        torch.set_num_threads(p.torch_threads)
        self.model: SolarModel | None = None
        self.controller: LinearGaussianController | None = None
        self.image_controller: ImageController | None = None
        self.sources = {"model": "none", "controller": "none"}
        self.clock = EpisodeClock(p.episode_steps, self._period_ns) if p.episode_steps else None
        self.episode: int | None = None
        self.rng: np.random.Generator | None = None
        self.images: OrderedDict[int, np.ndarray] = OrderedDict()  # stamp → rgb, oldest first
        self.newest: tuple[int, np.ndarray] | None = None
        self.last_index: int | None = None
        self._image_timeout_ns = seconds_to_ns(p.image_timeout)
        self._max_image_age_ns = seconds_to_ns(p.max_image_age)
        self._waiting_since: int | None = None  # sync: steady ns when the pending state came
        self._image_timer = None
        for what, path in (("model", p.model_file), ("controller", p.controller_file)):
            if path:
                try:
                    self._use(what, self._read(what, read_file(path)), "file")
                except (OSError, ArtifactError, ValueError) as exc:
                    raise ConfigError(f"parameter '{what}_file' = {path!r}: {exc}") from None
        subscribe(
            self,
            self.diag,
            UInt8MultiArray,
            SOLAR_MODEL,
            LATCHED_QOS,
            lambda m: self._on_artifact("model", m),
            lambda msg: self._read("model", bytes(msg.data)),
            "model",
        )
        subscribe(
            self,
            self.diag,
            UInt8MultiArray,
            CONTROLLER,
            LATCHED_QOS,
            lambda c: self._on_artifact("controller", c),
            lambda msg: self._read("controller", bytes(msg.data)),
            "controller",
        )
        subscribe(
            self,
            self.diag,
            Image,
            IMAGES,
            NEWEST_ONLY if self.realtime else STATE_QOS,
            self._on_image,
            self._read_image,
            "image",
        )
        self.get_logger().info(
            f"{self.robot.name}: {self.n} joints, {p.mode} mode, hold law {p.hold_law}; model "
            f"from {p.model_file or self.resolve_topic_name(SOLAR_MODEL)}, controller from "
            f"{p.controller_file or self.resolve_topic_name(CONTROLLER)}; images from "
            f"{self.resolve_topic_name(IMAGES)}"
        )

    # -- inputs ----------------------------------------------------------------------------------
    def _read(self, what: str, data: bytes):
        """A model or latent controller artifact that fits the other one already in use."""
        if what == "model":
            model = SolarModel.from_bytes(data)
            if self.controller is not None:
                ImageController(model, self.controller, self.safety.effort)
            return model
        c = LinearGaussianController.from_bytes(data, joint_names=self.names)
        if c.state_layout != LATENT_LAYOUT:
            raise ArtifactError(
                f"state_layout '{c.state_layout}' is not supported by the "
                f"solar_runner (needs '{LATENT_LAYOUT}')"
            )
        if c.du != self.n or c.dt_ns != self._period_ns:
            raise ArtifactError(
                f"controller for {c.du} joints at {c.dt_ns} ns; the arm has "
                f"{self.n} at control_period {self._period_ns} ns"
            )
        if self.model is not None:
            ImageController(self.model, c, self.safety.effort)
        return c

    def _use(self, what: str, artifact, source: str) -> None:
        setattr(self, what, artifact)
        self.sources[what] = source
        if self.model is not None and self.controller is not None:
            self.image_controller = ImageController(self.model, self.controller, self.safety.effort)
        self.episode = None  # the frame stack and the noise restart
        self.diag.count(f"{what}s")

    def _on_artifact(self, what: str, artifact) -> None:
        self._use(what, artifact, "topic")
        self.get_logger().info(f"new {what} from the topic")
        self._answer_if_ready()

    def _read_image(self, msg: Image) -> tuple[int, np.ndarray]:
        stamp = stamp_to_ns(msg.header.stamp)
        rgb = read_image(msg)
        if self.model is not None:
            s = self.model.config.image_size
            if rgb.shape != (s, s, 3):
                raise ValueError(
                    f"image {rgb.shape[1]} × {rgb.shape[0]} is not the model's {s} × {s}"
                )
        return stamp, rgb

    def _on_image(self, image: tuple[int, np.ndarray]) -> None:
        stamp, _ = image
        if self.newest is not None and stamp <= self.newest[0]:
            return  # a repeated or older frame
        self.newest = image
        if not self.realtime:
            self.images[stamp] = image[1]
            while len(self.images) > IMAGES_KEPT:
                self.images.popitem(last=False)
            self._answer_if_ready()

    def _answer_if_ready(self) -> None:
        if self.pending is not None and self._ready(self.pending.stamp_ns):
            self._answer_pending()

    def _ready(self, stamp_ns: int) -> bool:
        return self.image_controller is not None and stamp_ns in self.images

    def _check_image_wait(self) -> None:
        """Sync: a state whose image has not come within ``image_timeout`` is answered (hold)."""
        if self.pending is None or self._waiting_since is None:
            return
        if (
            time.monotonic_ns() - self._waiting_since >= self._image_timeout_ns
            and self.image_controller is not None
        ):
            self.diag.count("image_timeouts")
            self._answer_pending()

    # -- acting ----------------------------------------------------------------------------------
    def _answer(self, state: JointSample, now: int, start_ns: int) -> None:
        if self._answer_homing(state, now, start_ns):
            return
        image = self._image_for(state.stamp_ns)
        timed_out = (
            self._waiting_since is not None
            and time.monotonic_ns() - self._waiting_since >= self._image_timeout_ns
        )
        if (
            not self.realtime
            and not self.safety.estopped
            and (self.image_controller is None or (image is None and not timed_out))
        ):
            if self.pending is None or self.pending.stamp_ns != state.stamp_ns:
                self._waiting_since = time.monotonic_ns()
            self.pending = state  # sync: wait (publish nothing) for the model and the image
            self._arm_image_timer()
            self.diag.count("waiting")
            return
        self.pending, self._waiting_since = None, None
        u, why = None, "no_model" if self.image_controller is None else "stale_image"
        if self.image_controller is not None and image is not None:
            u, why = self._act(state.stamp_ns, image)
        elif self.image_controller is not None:
            self.image_controller.frames.reset()  # the stack would skip frames: start again
        self._send(
            state.position,
            state.velocity,
            u,
            state.stamp_ns,
            now=now if self.realtime else None,
            why=why,
        )
        self._record_compute(start_ns)

    def _image_for(self, stamp_ns: int) -> np.ndarray | None:
        """Sync: the image of this stamp; realtime: the newest, if recent enough."""
        if not self.realtime:
            return self.images.get(stamp_ns)
        if self.newest is None or stamp_ns - self.newest[0] > self._max_image_age_ns:
            return None
        return self.newest[1]

    def _act(self, stamp_ns: int, image: np.ndarray) -> tuple[np.ndarray | None, str]:
        """The controller's torque for the image at this stamp (None and why when there is
        none)."""
        ic, c = self.image_controller, self.controller
        if ic is None or c is None:  # callers check image_controller, set with controller
            raise RuntimeError("solar_runner: _act called before a model and controller arrived")
        if self.clock is not None:
            episode, t = self.clock.locate(stamp_ns)
        else:
            episode, t = c.start_ns, c.index(stamp_ns) if c.valid_at(stamp_ns) else None
        if episode != self.episode:
            self.episode = episode
            ic.frames.reset()
            self.rng = (
                np.random.default_rng([self.p.seed, episode & (2**63 - 1)])
                if self.p.stochastic
                else None
            )
        ic.push(image)
        self.last_index = t
        if t is None or t >= c.T:
            return (
                None,
                "plan_expired" if t is not None or stamp_ns >= c.end_ns else "plan_not_started",
            )
        with np.errstate(over="ignore", invalid="ignore"):  # non-finite u: the safety hold
            u = ic.act(t, self.rng)
        return u, "non_finite_command"

    def _arm_image_timer(self) -> None:
        if self._image_timer is None:
            self._image_timer = self.create_timer(
                min(0.05, self.p.image_timeout / 4),
                self._check_image_wait,
                clock=Clock(clock_type=ClockType.STEADY_TIME),
            )

    def _status(self) -> tuple[str, dict]:
        values = {
            "model_source": self.sources["model"],
            "controller_source": self.sources["controller"],
            "latent_dim": self.model.config.latent_dim if self.model else 0,
            "controller_steps": self.controller.T if self.controller else 0,
            "step_index": -1 if self.last_index is None else self.last_index,
        }
        if self.homing_active:
            return "homing", values
        if self.image_controller is None:
            return "no model or controller yet", values
        return "running", values


def main(args=None) -> int:
    return run_node(lambda: SolarRunnerNode(), "solar_runner", args)


if __name__ == "__main__":
    sys.exit(main())
