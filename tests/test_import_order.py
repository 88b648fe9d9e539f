"""The package's layout follows its data flow: a sub-package imports only from itself and from the
sub-packages before it in LAYERS (imports inside functions count too), and the pure core never
imports rclpy. Read from the sources with ``ast``, so this test needs neither ROS nor torch."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "mbrl_ros"

# Lowest first. What each layer holds: README, "How the code is organised".
LAYERS = (
    "common",  # settings, paths, artifact codec, message conversion, DDS environment
    "robot",  # URDF description, kinematics, gravity, stable gains, per-robot settings
    "control",  # linear-Gaussian controller, safety layer, homing, scripted controllers, π0
    "simulator",  # MuJoCo arm behind a ros2_control-like effort interface, camera
    "data",  # bags, recording, transitions, datasets, images
    "dynamics",  # learned and physics models of f(s, a)
    "tasks",  # costs, targets and episodes of reaching and insertion
    "planning",  # shooting planners, iLQR, MPC
    "trajopt",  # local linear-Gaussian models, KL-constrained LQR, guided policy search
    "policy",  # network policies: BPTT, PILCO, distillation
    "solar",  # latent models from images and latent LQR
    "experiments",  # offline drivers that compare versions
    "cli",  # the mbrl-ros command's offline subcommands and argument checks
    "nodes",  # the thin rclpy nodes
    "graphs",  # which nodes make up each graph, and the launchers
)
# Only these may import rclpy or the launch system (the command line uses rclpy's name checks when
# it is installed); the layers before them are the pure core.
ROS_LAYERS = {"cli", "nodes", "graphs"}
ROS_MODULES = ("rclpy", "rosidl_runtime_py", "launch", "launch_ros")


def _imports(package_dir: Path, path: Path) -> list[tuple[int, str]]:
    """(line, absolute module name) of every import in ``path``, relative ones resolved."""
    module = ".".join(path.relative_to(package_dir.parent).with_suffix("").parts)
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            found.append((node.lineno, name))
    return found


def _layer(package_dir: Path, path: Path) -> str | None:
    parts = path.relative_to(package_dir).parts
    return parts[0] if len(parts) > 1 else None


def against_the_order(package_dir: Path, layer: str) -> list[str]:
    """'file:line imports name' for each import of ``layer`` that runs against LAYERS."""
    allowed = set(LAYERS[: LAYERS.index(layer) + 1])
    found = []
    for path in sorted(package_dir.rglob("*.py")):
        if _layer(package_dir, path) != layer:
            continue
        where = path.relative_to(package_dir)
        for line, name in _imports(package_dir, path):
            parts = name.split(".")
            if parts[0] == "mbrl_ros" and len(parts) > 1 and parts[1] not in allowed:
                found.append(f"{where}:{line} imports {name}")
            if layer not in ROS_LAYERS and parts[0] in ROS_MODULES:
                found.append(f"{where}:{line} imports {name} (ROS, in the pure core)")
    return found


def test_every_module_lives_in_a_layer():
    sources = sorted(PACKAGE.rglob("*.py"))
    loose = [p.name for p in sources if _layer(PACKAGE, p) is None and p.name != "__init__.py"]
    unknown = sorted({_layer(PACKAGE, p) for p in sources} - {None, *LAYERS})
    assert not loose, f"modules at the package root, outside every layer: {loose}"
    assert not unknown, f"sub-packages missing from LAYERS: {unknown}"


@pytest.mark.parametrize("layer", LAYERS)
def test_a_layer_imports_only_from_the_layers_before_it(layer):
    found = against_the_order(PACKAGE, layer)
    assert not found, f"{layer} imports against the order {LAYERS}:\n" + "\n".join(found)


def test_the_check_reports_upward_and_ros_imports(tmp_path):
    fake = tmp_path / "mbrl_ros"
    (fake / "robot").mkdir(parents=True)
    (fake / "robot" / "bad.py").write_text(
        "from . import gravity\n\n"
        "def f():\n    from mbrl_ros.planning import mpc\n    import rclpy\n"
    )
    assert against_the_order(fake, "robot") == [
        "robot/bad.py:4 imports mbrl_ros.planning",
        "robot/bad.py:5 imports rclpy (ROS, in the pure core)",
    ]
    assert against_the_order(fake, "planning") == []
