"""launch_pytest tests of every graph's launch file, run by ROS 2's launch system (the kit in
``../shared``) from the package installed by colcon, with typical arguments (short lockstep runs,
``namespace``, ``robot:=arm2``, ``mode:=realtime``, ``sim:=false``): every node of the graph starts
in the namespace, the graph's topics appear there, each node has the parameters its config files
and the graph's overrides give it, and the launch shuts down cleanly (the launch service returns
0, every node exits 0, no traceback). ``ros2_control.launch.py`` needs ros2_control, which no
wheel provides: tests/test_ros2_control.py checks it structurally."""

from __future__ import annotations

import re
import sys

import pytest
import yaml
from launch_kit import KIT, kit_environment, requires_kit
from ros_harness import get_parameters, wait_for

from mbrl_ros.common.param_files import node_parameters
from mbrl_ros.common.paths import share_path
from mbrl_ros.data.topics import resolve
from mbrl_ros.graphs.description import graph

if not KIT.is_dir():
    pytest.skip(requires_kit.kwargs["reason"], allow_module_level=True)
sys.path[:0] = [str(KIT / "site"), str(KIT / "stubs")]
pytest_plugins = ["launch_pytest.plugin", "launch_kit"]  # launch_kit: the ros_install fixture

import launch_pytest  # noqa: E402
from launch.actions import IncludeLaunchDescription, RegisterEventHandler  # noqa: E402
from launch.event_handlers import OnProcessExit, OnProcessIO  # noqa: E402
from launch.launch_description_sources import PythonLaunchDescriptionSource  # noqa: E402

from launch import LaunchDescription  # noqa: E402

pytestmark = [pytest.mark.ros, pytest.mark.slow, pytest.mark.timeout(300)]

START_TIMEOUT_S = 120.0  # a loaded 2-core machine starts torch in six processes
BAD_OUTPUT = ("Traceback", "terminate called", "[ERROR]")
CASES = {  # id: (launch file, arguments, topics the graph's nodes offer, in its namespace)
    "sim-arm2-namespace": (
        "sim",
        {"robot": "arm2", "duration": "0", "namespace": "/robot1"},
        ["joint_states", "effort_controller/commands", "mbrl/controller"],
    ),
    "record-realtime": (
        "record",
        {"robot": "arm2", "mode": "realtime", "namespace": "lab"},
        ["joint_states", "effort_controller/commands", "mbrl/episode_events"],
    ),
    "record-robot": (
        "record",
        {
            "robot": "arm2",
            "sim": "false",
            "robot_compensates_gravity": "false",
            "namespace": "/arm",
            "joint_states": "/driver/joint_states",
            "commands": "/driver/effort_controller/commands",
        },
        ["/driver/joint_states", "/driver/effort_controller/commands", "mbrl/episode_events"],
    ),
    "mpc-arm2-namespace": (
        "mpc",
        {"robot": "arm2", "namespace": "/robot1"},
        ["joint_states", "mbrl/target", "mbrl/controller", "mbrl/dynamics_model"],
    ),
    "gps-arm2": (
        "gps",
        {"robot": "arm2"},
        ["joint_states", "effort_controller/commands", "mbrl/controller"],
    ),
    "gps-conditions-mdgps": (
        "gps",
        {
            "robot": "arm2",
            "initial_position": "0.3,0.5;-0.5,1.0",
            "algorithm": "mdgps",
            "namespace": "/cell",
        },
        ["joint_states", "mbrl/controller", "mbrl/homing_controller"],
    ),
    "policy-realtime": (
        "policy",
        {"robot": "arm2", "mode": "realtime", "namespace": "/robot2"},
        ["joint_states", "mbrl/target", "mbrl/policy"],
    ),
}


class Processes:
    """What the launch's processes print and how they exit (by process name)."""

    def __init__(self):
        self.output: list[str] = []
        self.exits: dict[str, int] = {}

    def on_io(self, event) -> None:
        self.output.append(event.text.decode(errors="replace"))

    def on_exit(self, event, _context) -> None:
        self.exits[event.action.process_details["name"]] = event.returncode

    def text(self) -> str:
        return "".join(self.output)


def case_args(case: str, tmp_path) -> tuple[str, dict[str, str], list[str]]:
    """(graph, arguments, topics) of ``case``; a record graph writes its bag into tmp_path."""
    name, args, topics = CASES[case]
    return name, args | ({"bag": str(tmp_path / "bag")} if name == "record" else {}), topics


@pytest.fixture(params=sorted(CASES))
def case(request):
    return request.param


@pytest.fixture
def processes():
    return Processes()


@launch_pytest.fixture
def graph_launch(case, processes, ros_install, tmp_path, monkeypatch):
    """The installed ``<graph>.launch.py`` with the case's arguments, as ``ros2 launch`` runs it
    (the node processes resolved through the ament index of the colcon install)."""
    for key, value in kit_environment(ros_install, tmp_path / "log").items():
        monkeypatch.setenv(key, value)
    monkeypatch.chdir(tmp_path)
    name, args, _ = case_args(case, tmp_path)
    source = ros_install / "share" / "mbrl_ros" / "launch" / f"{name}.launch.py"
    return LaunchDescription(
        [
            RegisterEventHandler(OnProcessIO(on_stdout=processes.on_io, on_stderr=processes.on_io)),
            RegisterEventHandler(OnProcessExit(on_exit=processes.on_exit)),
            IncludeLaunchDescription(
                PythonLaunchDescriptionSource(str(source)), launch_arguments=list(args.items())
            ),
            launch_pytest.actions.ReadyToTest(),
        ]
    )


# launch_pytest (jazzy) reads the fixture marker where pytest < 8.4 kept it
if not hasattr(graph_launch, "_pytestfixturefunction"):
    graph_launch._pytestfixturefunction = graph_launch._fixture_function_marker


def expected_parameters(spec) -> dict:
    """What the node of ``spec`` should hold: its config files' sections for it (later files
    winning), then the graph's overrides."""
    out: dict = {}
    for config in spec.config:
        out |= node_parameters(yaml.safe_load(share_path("config", config).read_text()), spec.name)
    return out | spec.parameters


@pytest.mark.launch(fixture=graph_launch)
def test_launch_file_starts_the_graph_in_its_namespace_and_stops_cleanly(
    case, processes, ros, tmp_path
):
    name, args, topics = case_args(case, tmp_path)
    specs = graph(name, **args)
    namespace = specs[0].namespace
    probe = ros.node("launch_probe")
    nodes = {(s.name, namespace) for s in specs}
    wanted = {resolve(t, namespace) for t in topics}

    def up() -> bool:
        return nodes <= set(probe.get_node_names_and_namespaces()) and wanted <= set(
            dict(probe.get_topic_names_and_types())
        )

    try:
        wait_for(up, START_TIMEOUT_S, f"nodes {sorted(nodes)} and topics {sorted(wanted)}")
    except AssertionError as exc:
        raise AssertionError(f"{exc}; output ends:\n{processes.text()[-4000:]}") from None
    if namespace != "/":  # nothing of the graph's in the root namespace
        root = sorted(
            t
            for t, _ in probe.get_topic_names_and_types()
            if re.match(r"/(mbrl|joint_states|effort_controller)\b", t)
        )
        assert not root, root
    for spec in specs:
        expected = expected_parameters(spec)
        got = get_parameters(probe, resolve(spec.name, namespace), sorted(expected))
        assert got == expected, spec.name
    yield  # the launch service shuts down (SIGINT to every node); it must return 0
    out = processes.text()
    assert not [b for b in BAD_OUTPUT if b in out], out[-6000:]
    assert processes.exits and set(processes.exits.values()) == {0}, processes.exits
    assert len(processes.exits) == len(specs), processes.exits
