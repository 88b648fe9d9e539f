"""Shared by the camera tests: skip, with the reason, where no OpenGL backend can render."""

from __future__ import annotations

import functools

import mujoco
import pytest

from mbrl_ros.simulator.camera import Camera, CameraError


@functools.lru_cache(maxsize=1)
def gl_problem() -> str | None:
    """Why rendering is unavailable here, or None when a Camera can render."""
    model = mujoco.MjModel.from_xml_string(
        '<mujoco><worldbody><camera name="c" pos="0 0 1"/></worldbody></mujoco>'
    )
    try:
        Camera(model, "c", 8, 8).close()
    except CameraError as exc:
        return str(exc)
    return None


def require_gl() -> None:
    """Skip the calling test when no OpenGL backend is usable (the message says what to install)."""
    problem = gl_problem()
    if problem is not None:
        pytest.skip(f"rendering unavailable: {problem}")
