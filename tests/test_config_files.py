"""The shipped parameter files set only parameters their nodes declare (a node refuses to start
on an unknown one, ``nodes.params.check_unknown_parameters``), and every value passes the node's
own check; a node's section builds the core settings it declares (``NODE_SETTINGS``: the node
declares exactly their params, as the core defines them)."""

import importlib
from pathlib import Path

import pytest
import yaml

from mbrl_ros.common.param_files import ANY_NODE
from mbrl_ros.control.homing import HomingSettings
from mbrl_ros.control.safety import SafetyConfig
from mbrl_ros.dynamics.catalog import FitterSettings
from mbrl_ros.nodes.params import ConfigError
from mbrl_ros.simulator.simulation import SimConfig
from mbrl_ros.tasks.episodes import EpisodeSettings, TargetRegionSettings
from mbrl_ros.trajopt.gps import GPSConfig

CONFIG = Path(__file__).resolve().parents[1] / "config"
# ros2_controllers.yaml configures ros2_control's controller_manager, not this package's nodes
FILES = sorted(f for f in CONFIG.glob("*.yaml") if f.name != "ros2_controllers.yaml")
ROS_OWN = {"use_sim_time"}  # declared by rclpy itself
# the core settings each node declares as parameters (besides its own wiring parameters)
NODE_SETTINGS = {
    "episode_manager": [EpisodeSettings, TargetRegionSettings, HomingSettings],
    "gps_trainer": [GPSConfig, HomingSettings, TargetRegionSettings],
    "lg_executor": [SafetyConfig],
    "policy_runner": [SafetyConfig],
    "solar_runner": [SafetyConfig],
    "arm_sim": [SimConfig],
    "dynamics_fitter": [FitterSettings],
}
# declared by the node with its own default (arm_sim: control_period 0 = the mode's default)
NODE_OWN = {"arm_sim": {"control_period"}}


def sections(path: Path):
    """(node name, parameters) of each ``/**/<node>`` section of ``path``."""
    document = yaml.safe_load(path.read_text()) or {}
    for key, section in document.items():
        assert key.startswith(f"{ANY_NODE}/"), f"{path.name}: section '{key}' is not /**/<node>"
        yield key[len(ANY_NODE) + 1 :], (section or {}).get("ros__parameters", {})


@pytest.mark.parametrize("path", FILES, ids=[f.name for f in FILES])
def test_every_key_of_a_parameter_file_is_a_declared_parameter_with_a_valid_value(path):
    assert list(sections(path)), f"{path.name} has no node section"
    for node, values in sections(path):
        params = {p.name: p for p in importlib.import_module(f"mbrl_ros.nodes.{node}").PARAMS}
        unknown = sorted(set(values) - set(params) - ROS_OWN)
        assert not unknown, f"{path.name}: /**/{node} sets undeclared parameter(s) {unknown}"
        for name, value in values.items():
            if name in params:
                try:
                    params[name].check(value)
                except ConfigError as exc:
                    pytest.fail(f"{path.name}: /**/{node}: {exc}")


@pytest.mark.parametrize("node", sorted(NODE_SETTINGS))
def test_a_node_declares_its_settings_params_exactly_as_the_core_defines_them(node):
    params = importlib.import_module(f"mbrl_ros.nodes.{node}").PARAMS
    names = [p.name for p in params]
    assert len(names) == len(set(names)), f"{node} declares a parameter twice"
    declared = {p.name: p for p in params}
    for cls in NODE_SETTINGS[node]:
        for p in cls.params():
            if p.name in NODE_OWN.get(node, ()):
                assert p.name in declared, f"{node} does not declare {p.name}"
            else:
                assert declared.get(p.name) == p, f"{node}: '{p.name}' is not {cls.__name__}'s"


@pytest.mark.parametrize("path", FILES, ids=[f.name for f in FILES])
def test_a_parameter_file_section_builds_the_nodes_core_settings(path):
    for node, values in sections(path):
        own = NODE_OWN.get(node, set())
        for cls in NODE_SETTINGS.get(node, []):
            try:
                cls.select({k: v for k, v in values.items() if k not in own})
            except ConfigError as exc:
                pytest.fail(f"{path.name}: /**/{node}: {cls.__name__}: {exc}")
