"""The core's typed settings of the episodes, homing and GPS components (no ROS): offline code
builds them directly, unknown names and bad values are refused by name, and the cross-setting
rules hold. (``test_config_files`` checks that the nodes declare them and that the shipped YAML
files build them.)"""

import numpy as np
import pytest

from mbrl_ros.common.settings import ConfigError
from mbrl_ros.control.homing import HomingSettings
from mbrl_ros.robot.description import load_robot
from mbrl_ros.tasks.episodes import EpisodeSettings, TargetRegionSettings
from mbrl_ros.trajopt.gps import GPSConfig

CLASSES = [EpisodeSettings, TargetRegionSettings, HomingSettings, GPSConfig]


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
def test_unknown_names_are_refused_with_the_nearest_known_one(cls):
    name = next(iter(sorted(cls.names())))
    with pytest.raises(ConfigError, match=rf"unknown {cls.__name__} setting.*'{name}x'.*'{name}'"):
        cls.from_mapping({name + "x": 1})


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
def test_defaults_build_and_match_the_declared_params(cls):
    settings = cls()
    assert settings.as_dict() == {p.name: p.default for p in cls.params()}
    assert cls.from_mapping(settings.as_dict()) == settings
    assert all(p.description for p in cls.params())


@pytest.mark.parametrize(
    "cls, values, message",
    [
        (EpisodeSettings, {"episode_steps": 0}, r"'episode_steps' = 0 is out of range"),
        (EpisodeSettings, {"target": [0.1, 0.2]}, r"'target' = \[0.1, 0.2\] needs 3 values"),
        (EpisodeSettings, {"target_box_min": [0.0]}, r"'target_box_min' and 'target_box_max'"),
        (EpisodeSettings, {"train_episodes": 0, "final_eval_episodes": 0}, "no episodes to run"),
        (EpisodeSettings, {"train_seed": -1}, r"'train_seed' = -1 is out of range"),
        (TargetRegionSettings, {"target_radius": -0.1}, r"'target_radius' = -0.1 is out of"),
        (HomingSettings, {"homing_speed": 0.0}, r"'homing_speed' = 0.0 is out of range"),
        (HomingSettings, {"homing_retries": 1.5}, r"'homing_retries' = 1.5 must be an integer"),
        (HomingSettings, {"settle_time": "long"}, r"'settle_time' = 'long' must be a number"),
        (
            GPSConfig,
            {"min_step_mult": 2.0},
            r"'min_step_mult' = 2.0 is out of range \[1e-06, 1.0\]",
        ),
        (GPSConfig, {"prior": "gp"}, r"'prior' = 'gp' must be one of \['gmm', 'none'\]"),
        (GPSConfig, {"eta_step": 1.0}, r"'eta_step' = 1.0 is out of range"),
        (
            GPSConfig,
            {"eta_min": 1e-2, "eta_max": 1e-3},
            r"GPS settings: need 0 < eta_min < eta_max",
        ),
    ],
)
def test_bad_values_are_refused_by_name(cls, values, message):
    with pytest.raises(ConfigError, match=message):
        cls.from_mapping(values)


def test_episode_schedule_and_targets_offline():
    settings = EpisodeSettings(train_episodes=4, eval_every=2, final_eval_episodes=2)
    assert settings.schedule() == [False, False, True, False, False, True, True, True]
    robot = load_robot("arm2")
    box = EpisodeSettings(
        target_box_min=[-0.27, -0.27, 0.0], target_box_max=[0.27, 0.27, 0.15], final_eval_episodes=3
    )
    targets = box.box_targets(robot)
    assert len(targets) == 13 and all(np.all(t >= box.box[0]) for t in targets)
    # training and held-out targets from their own seeds: the same seeds give the same targets
    assert np.array_equal(targets[0], box.box_targets(robot)[0])
    assert not np.array_equal(targets[0], targets[-1])
    fixed = EpisodeSettings(target=[0.1, 0.0, 0.1], train_episodes=1, final_eval_episodes=1)
    assert [t.tolist() for t in fixed.box_targets(robot)] == [[0.1, 0.0, 0.1]] * 2
    home = np.zeros(robot.n_joints)
    region = TargetRegionSettings(target_radius=0.3, target_min_height=-1.0)
    assert len(box.region_targets(robot, home, region)) == 13
    pose = box.start_poses(robot, home, region).pose(0)
    assert np.all(np.abs(pose - home) <= box.start_radius + 1e-12)


def test_homing_settings_build_the_settle_detector():
    settings = HomingSettings(settle_position_tolerance=0.01, settle_time=0.1, homing_timeout=1.0)
    detector = settings.settle_detector(np.zeros(2), ["a", "b"])
    assert detector.position_tol.tolist() == [0.01, 0.01]
    assert detector.dwell_ns == 100_000_000 and detector.timeout_ns == 1_000_000_000
    assert not detector.update(0, np.zeros(2), np.zeros(2))
    assert detector.update(100_000_000, np.zeros(2), np.zeros(2))


def test_gps_config_offline_carries_the_eta_search_and_per_condition_seeds():
    config = GPSConfig(prior="none", eta_min=1e-9, eta_max=1e-6, eta_iterations=3)
    assert (config.kl.eta_min, config.kl.eta_max, config.kl.max_iterations) == (1e-9, 1e-6, 3)
    assert GPSConfig().kl == type(config.kl)()  # the η search's own defaults
    assert config.replace(seed=config.seed + 2).seed == 2
    with pytest.raises(ConfigError, match="'seed' = -1"):
        config.replace(seed=-1)
