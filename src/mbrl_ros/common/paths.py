"""Where the package's data folders (urdf/, sim/, config/, launch/) live at run time.

Order of lookup: ``$MBRL_ROS_SHARE``; the source checkout this module was imported from (editable
or in-tree use, so edits to urdf/ take effect at once); the ament index of a ROS install
(``share/mbrl_ros`` of a colcon install); ``<sys.prefix>/share/mbrl_ros`` of a pip install.
"""

from __future__ import annotations

import os
import sys
from functools import lru_cache
from pathlib import Path

PACKAGE = "mbrl_ros"
DATA_FOLDERS = ("launch", "config", "urdf", "sim")


def _is_share(path: Path) -> bool:
    return (path / "urdf").is_dir() and (path / "sim").is_dir()


@lru_cache(maxsize=1)
def share_dir() -> Path:
    """The folder holding urdf/, sim/, config/ and launch/; FileNotFoundError if none is found."""
    candidates = []
    if os.environ.get("MBRL_ROS_SHARE"):
        candidates.append(Path(os.environ["MBRL_ROS_SHARE"]))
    checkout = Path(__file__).resolve().parents[3]  # src/mbrl_ros/common/paths.py
    if (checkout / "package.xml").is_file():
        candidates.append(checkout)
    try:
        from ament_index_python.packages import get_package_share_directory

        candidates.append(Path(get_package_share_directory(PACKAGE)))
    except Exception:  # not a ROS install, or the package is not in the ament index
        pass
    candidates.append(Path(sys.prefix) / "share" / PACKAGE)
    for path in candidates:
        if _is_share(path):
            return path
    raise FileNotFoundError(
        "cannot find the mbrl_ros data folders (urdf/, sim/); looked in: "
        + ", ".join(str(p) for p in candidates)
        + ". Set MBRL_ROS_SHARE to the folder that holds them."
    )


def share_path(*parts: str) -> Path:
    """Path of a file under the share folder, e.g. ``share_path('urdf', 'arm7.urdf')``."""
    return share_dir().joinpath(*parts)


def resolve_resource(value: str, folder: str, suffix: str) -> Path:
    """A user's file argument: an existing path, or a bare name looked up in ``folder``.

    ``resolve_resource('arm7', 'urdf', '.urdf')`` gives ``<share>/urdf/arm7.urdf``. Raises
    FileNotFoundError naming what was tried.
    """
    path = Path(value).expanduser()
    if path.is_file():
        return path
    name = value if value.endswith(suffix) else value + suffix
    if os.sep not in value:
        candidate = share_path(folder, name)
        if candidate.is_file():
            return candidate
        raise FileNotFoundError(f"no file '{value}' and no '{name}' in {share_path(folder)}")
    raise FileNotFoundError(f"no file '{value}'")
