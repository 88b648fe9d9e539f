"""Offscreen rendering of a fixed MuJoCo camera (pure core: no ROS).

``Camera(model, "solar", 64, 64).render(data)`` gives the camera's view of ``data`` as an rgb
uint8 array (height, width, 3), row 0 at the top, the same bytes for the same state. The OpenGL
backend is MuJoCo's: ``MUJOCO_GL`` if set (osmesa, egl, glfw), else glfw with a ``DISPLAY`` and
OSMesa (software, ``apt-get install libosmesa6``) without one. ``intrinsics`` and ``project``
follow the ROS/OpenCV pinhole convention (optical frame: x right, y down, z forward; pixel centres
at integer coordinates). Frames are rendered without shadows, reflections and skybox unless
``effects``: in software rendering (OSMesa) those cost 10–30 times the plain frame
(benchmarks/bench_render.py).
"""

from __future__ import annotations

import importlib
import os

import mujoco
import numpy as np

SOLAR_CAMERA = "solar"  # the fixed camera of sim/scene.xml that looks at the arm's workspace
BACKENDS = ("osmesa", "egl", "glfw")
INSTALL_HINT = (
    "on a headless machine install OSMesa (apt-get install libosmesa6) and set "
    "MUJOCO_GL=osmesa, or use MUJOCO_GL=egl with a GPU driver"
)


class CameraError(RuntimeError):
    """The camera cannot render: unknown camera, bad size or no usable OpenGL backend."""


def gl_backend() -> str:
    """The OpenGL backend a Camera uses: MUJOCO_GL if set, glfw with a display, else osmesa."""
    chosen = os.environ.get("MUJOCO_GL", "").strip().lower()
    if chosen:
        if chosen not in BACKENDS:
            raise CameraError(f"MUJOCO_GL={chosen!r} is not one of {', '.join(BACKENDS)}")
        return chosen
    return "glfw" if os.environ.get("DISPLAY") else "osmesa"


def _gl_context(width: int, height: int):
    """A current OpenGL context of ``gl_backend()`` with a framebuffer of at least the size."""
    backend = gl_backend()
    try:
        module = importlib.import_module(f"mujoco.{backend}")
        context = module.GLContext(width, height)
    except Exception as exc:  # noqa: BLE001 - ImportError, OSError, RuntimeError of the backend
        raise CameraError(
            f"no usable OpenGL backend {backend!r} ({type(exc).__name__}: {exc}); {INSTALL_HINT}"
        ) from None
    context.make_current()
    return context


class Camera:
    """A fixed camera of ``model`` rendered offscreen at ``width`` × ``height`` pixels
    (``effects``: with shadows, reflections and skybox)."""

    def __init__(
        self,
        model: mujoco.MjModel,
        camera: str = SOLAR_CAMERA,
        width: int = 64,
        height: int = 64,
        effects: bool = False,
    ):
        self.camera_id = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_CAMERA, camera)
        if self.camera_id < 0:
            names = [model.camera(i).name for i in range(model.ncam)]
            raise CameraError(f"the model has no camera {camera!r}; it has {names}")
        if not (isinstance(width, (int, np.integer)) and isinstance(height, (int, np.integer))):
            raise CameraError(f"camera size must be whole pixels, got {width} × {height}")
        buffer = (model.vis.global_.offwidth, model.vis.global_.offheight)
        if not (1 <= width <= buffer[0] and 1 <= height <= buffer[1]):
            raise CameraError(
                f"camera size {width} × {height} must be between 1 × 1 and the "
                f"model's offscreen buffer {buffer[0]} × {buffer[1]}"
            )
        self.model, self.name = model, camera
        self.width, self.height = int(width), int(height)
        self._camera = mujoco.MjvCamera()
        self._camera.type = mujoco.mjtCamera.mjCAMERA_FIXED
        self._camera.fixedcamid = self.camera_id
        self._option = mujoco.MjvOption()
        self._scene = mujoco.MjvScene(model, maxgeom=max(1000, 2 * model.ngeom))
        for flag in (
            mujoco.mjtRndFlag.mjRND_SHADOW,
            mujoco.mjtRndFlag.mjRND_REFLECTION,
            mujoco.mjtRndFlag.mjRND_SKYBOX,
        ):
            self._scene.flags[flag] = bool(effects)
        self._rect = mujoco.MjrRect(0, 0, self.width, self.height)
        self._rgb = np.empty((self.height, self.width, 3), np.uint8)
        self._gl = _gl_context(self.width, self.height)
        self._context = mujoco.MjrContext(model, mujoco.mjtFontScale.mjFONTSCALE_100)
        mujoco.mjr_setBuffer(mujoco.mjtFramebuffer.mjFB_OFFSCREEN, self._context)

    def render(self, data: mujoco.MjData) -> np.ndarray:
        """The camera's view of ``data`` (its kinematics must be current, e.g. after mj_step or
        mj_forward): a new uint8 array (height, width, 3), rgb, row 0 at the top."""
        if self._gl is None:
            raise CameraError(f"camera {self.name!r} is closed")
        self._gl.make_current()
        mujoco.mjv_updateScene(
            self.model,
            data,
            self._option,
            None,
            self._camera,
            mujoco.mjtCatBit.mjCAT_ALL,
            self._scene,
        )
        mujoco.mjr_render(self._rect, self._scene, self._context)
        mujoco.mjr_readPixels(self._rgb, None, self._rect, self._context)
        return self._rgb[::-1].copy()  # OpenGL's row 0 is the bottom

    def intrinsics(self) -> tuple[float, float, float, float]:
        """(fx, fy, cx, cy) in pixels: the focal length from the camera's vertical fovy (square
        pixels), the principal point at the image centre ((width − 1)/2, (height − 1)/2)."""
        fovy = np.radians(self.model.cam_fovy[self.camera_id])
        f = 0.5 * self.height / np.tan(0.5 * fovy)
        return float(f), float(f), (self.width - 1) / 2.0, (self.height - 1) / 2.0

    def pose(self, data: mujoco.MjData) -> tuple[np.ndarray, np.ndarray]:
        """(position (3,) m, rotation (3, 3)) of the optical frame in the world: columns are its
        x (right), y (down), z (viewing direction) axes."""
        rot = data.cam_xmat[self.camera_id].reshape(3, 3) @ np.diag([1.0, -1.0, -1.0])
        return data.cam_xpos[self.camera_id].copy(), rot

    def project(self, data: mujoco.MjData, points: np.ndarray) -> np.ndarray:
        """Pixel coordinates (..., 2) (u right, v down) of world ``points`` (..., 3) in m."""
        position, rot = self.pose(data)
        p = (np.asarray(points, float) - position) @ rot
        fx, fy, cx, cy = self.intrinsics()
        return np.stack([fx * p[..., 0] / p[..., 2] + cx, fy * p[..., 1] / p[..., 2] + cy], -1)

    def close(self) -> None:
        """Free the OpenGL resources; render() fails afterwards. Safe to call twice."""
        if self._gl is None:
            return
        self._gl.make_current()
        self._context.free()
        self._gl.free()
        self._gl = None

    def __enter__(self) -> Camera:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
