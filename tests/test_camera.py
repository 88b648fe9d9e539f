"""The offscreen camera: deterministic frames, the pinhole model against the rendered image, and
errors that say what is wrong."""

from __future__ import annotations

import mujoco
import numpy as np
import pytest
from camera_testing import require_gl

from mbrl_ros.robot.description import load_robot
from mbrl_ros.simulator.camera import Camera, CameraError, gl_backend
from mbrl_ros.simulator.simulation import ArmSimulator, SimConfig


@pytest.fixture(scope="module")
def arm2():
    require_gl()
    sim = ArmSimulator(load_robot("arm2"), SimConfig())
    sim.set_state(np.array([0.4, -0.9]), np.zeros(2))
    return sim


def _move_target(sim, point) -> None:
    sim.data.mocap_pos[0] = point
    mujoco.mj_forward(sim.model, sim.data)


def _green_centroid(img: np.ndarray) -> np.ndarray:
    """(u, v) mean of the target sphere's pixels (green dominant)."""
    rgb = img.astype(int)
    mask = (rgb[..., 1] > rgb[..., 0] + 40) & (rgb[..., 1] > rgb[..., 2] + 40)
    assert mask.sum() >= 3, "the target is not visible"
    v, u = np.nonzero(mask)
    return np.array([u.mean(), v.mean()])


def test_render_is_rgb_uint8_and_deterministic(arm2):
    with Camera(arm2.model, "solar", 64, 48) as cam:
        first = cam.render(arm2.data)
        assert first.shape == (48, 64, 3) and first.dtype == np.uint8
        arm2.step(np.array([0.5, -0.3]))
        moved = cam.render(arm2.data)
        assert np.abs(moved.astype(int) - first).sum() > 0, "the arm moved, the image did not"
        arm2.set_state(np.array([0.4, -0.9]), np.zeros(2))
        np.testing.assert_array_equal(cam.render(arm2.data), first)
    with Camera(arm2.model, "solar", 64, 48) as other:  # a fresh context gives the same bytes
        np.testing.assert_array_equal(other.render(arm2.data), first)


@pytest.mark.parametrize("camera", ["solar", "solar_wide"])
def test_target_projects_onto_its_pixels(arm2, camera):
    """The pinhole model (intrinsics, optical-frame pose) puts the target sphere's centre where
    the renderer draws it, for a top-down and an oblique camera, at several target positions."""
    with Camera(arm2.model, camera, 128, 128) as cam:
        fx, fy, cx, cy = cam.intrinsics()
        fovy = np.radians(arm2.model.cam_fovy[cam.camera_id])
        assert fx == fy and np.isclose(2 * np.arctan(64 / fy), fovy) and cx == cy == 63.5
        for point in ([0.15, 0.1, 0.07], [-0.1, -0.2, 0.1], [0.2, -0.15, 0.3]):
            _move_target(arm2, point)
            expected = cam.project(arm2.data, np.array(point))
            np.testing.assert_allclose(_green_centroid(cam.render(arm2.data)), expected, atol=0.7)


def test_errors_name_what_is_wrong(arm2, monkeypatch):
    with pytest.raises(CameraError, match="no camera 'nope'.*solar"):
        Camera(arm2.model, "nope")
    with pytest.raises(CameraError, match="offscreen buffer"):
        Camera(arm2.model, "solar", 5000, 64)
    with pytest.raises(CameraError, match="whole pixels"):
        Camera(arm2.model, "solar", 64.0, 64)
    cam = Camera(arm2.model, "solar", 16, 16)
    cam.close()
    cam.close()
    with pytest.raises(CameraError, match="closed"):
        cam.render(arm2.data)
    monkeypatch.setenv("MUJOCO_GL", "vulkan")
    with pytest.raises(CameraError, match="MUJOCO_GL='vulkan'"):
        Camera(arm2.model, "solar")


def test_backend_choice(monkeypatch):
    monkeypatch.delenv("MUJOCO_GL", raising=False)
    monkeypatch.delenv("DISPLAY", raising=False)
    assert gl_backend() == "osmesa"
    monkeypatch.setenv("DISPLAY", ":0")
    assert gl_backend() == "glfw"
    monkeypatch.setenv("MUJOCO_GL", "EGL")
    assert gl_backend() == "egl"


def test_read_image_undoes_padding_and_channel_order():
    from types import SimpleNamespace

    from mbrl_ros.common.msgconv import MessageError, read_image

    rgb = np.random.default_rng(0).integers(0, 256, (3, 4, 3), dtype=np.uint8)
    bgra = np.concatenate([rgb[..., ::-1], np.full((3, 4, 1), 255, np.uint8)], -1)
    padded = np.zeros((3, 20), np.uint8)
    padded[:, :16] = bgra.reshape(3, 16)
    msg = SimpleNamespace(encoding="bgra8", height=3, width=4, step=20, data=padded.tobytes())
    np.testing.assert_array_equal(read_image(msg), rgb)
    with pytest.raises(MessageError, match="encoding '16UC1'"):
        read_image(SimpleNamespace(encoding="16UC1", height=3, width=4, step=8, data=b""))
    with pytest.raises(MessageError, match="does not fit its 35 bytes"):
        read_image(SimpleNamespace(encoding="rgb8", height=3, width=4, step=12, data=b"x" * 35))


def test_missing_backend_says_what_to_install(arm2, monkeypatch):
    """A backend whose library is missing (as OSMesa without libosmesa6) gives a CameraError that
    names the backend, the cause and the fix."""
    import mbrl_ros.simulator.camera as camera_module

    def missing(name):
        raise ImportError("libOSMesa.so.8: cannot open shared object file")

    monkeypatch.setattr(camera_module.importlib, "import_module", missing)
    monkeypatch.delenv("MUJOCO_GL", raising=False)
    monkeypatch.delenv("DISPLAY", raising=False)
    with pytest.raises(
        CameraError,
        match=r"no usable OpenGL backend 'osmesa' \(ImportError: "
        r"libOSMesa.*apt-get install libosmesa6.*MUJOCO_GL="
        r"osmesa",
    ):
        Camera(arm2.model, "solar")
