"""Camera images as observations of transitions: frames by stamp, joined to a dataset's states.

A transition's image observations are the frames whose stamps are nearest to the stamps of s and
s' (s' at s + dt), each within ``tolerance``·dt; the simulator stamps its frames with the joint
state's stamp, so they match exactly. Transitions lacking either frame are dropped and counted
(``no_image``). Frames are kept once each (``Dataset.frames``), however many transitions use them.
Live (a node): feed the image topic to ``ImageFrames.add_msg`` beside the transition builder,
``attach`` what the builder's ``take`` returns, then ``forget_before`` the oldest stamp still to
come, so the frames kept stay bounded.
"""

from __future__ import annotations

from collections import Counter

import numpy as np

from mbrl_ros.common.msgconv import MessageError, read_image, seconds_to_ns, stamp_to_ns
from mbrl_ros.data.bags import BagReader
from mbrl_ros.data.dataset import Dataset
from mbrl_ros.data.errors import BagError, DataError
from mbrl_ros.data.topics import IMAGES, KNOWN_TYPES


class ImageFrames:
    """rgb frames (H, W, 3) uint8 by stamp (ns), all of one size; a repeated stamp keeps the
    first frame."""

    def __init__(self) -> None:
        self._frames: dict[int, np.ndarray] = {}
        self.shape: tuple[int, ...] | None = None  # (H, W, 3) of the first frame

    def __len__(self) -> int:
        return len(self._frames)

    def add_msg(self, msg) -> None:
        """A sensor_msgs/Image (``msgconv.read_image``'s encodings). MessageError if malformed or
        of another size than the first."""
        self.add(stamp_to_ns(msg.header.stamp), read_image(msg))

    def add(self, stamp_ns: int, rgb: np.ndarray) -> None:
        if self.shape is None:
            self.shape = rgb.shape
        elif rgb.shape != self.shape:
            raise MessageError(
                f"image of {rgb.shape[1]} × {rgb.shape[0]} pixels; the first was "
                f"{self.shape[1]} × {self.shape[0]}"
            )
        self._frames.setdefault(int(stamp_ns), rgb)

    def forget_before(self, stamp_ns: int) -> None:
        """Drop the frames stamped before ``stamp_ns``."""
        for stamp in [t for t in self._frames if t < stamp_ns]:
            del self._frames[stamp]

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """(stamps (M,) ns ascending, frames (M, H, W, 3) uint8)."""
        stamps = np.array(sorted(self._frames), dtype=np.int64)
        return stamps, np.stack([self._frames[int(t)] for t in stamps])

    def attach(self, data: Dataset, tolerance: float = 0.5) -> tuple[Dataset, Counter]:
        """``data`` with image observations (transitions without both frames dropped) and the
        count of those dropped (``no_image``)."""
        if not 0.0 <= tolerance <= 0.5:
            raise DataError(f"image tolerance {tolerance} must be in [0, 0.5] (fraction of dt)")
        if not self._frames or self.shape is None:  # (the shape is set with the first frame)
            raise DataError("no images to attach")
        stamps = np.array(sorted(self._frames), dtype=np.int64)
        dt_ns = seconds_to_ns(data.dt)
        now, ok_now = _nearest(stamps, data.stamps, tolerance * dt_ns)
        nxt, ok_next = _nearest(stamps, data.stamps + dt_ns, tolerance * dt_ns)
        keep = ok_now & ok_next
        kept = data.select(keep)
        used, inverse = np.unique(np.concatenate([now[keep], nxt[keep]]), return_inverse=True)
        frames = (
            np.stack([self._frames[int(stamps[i])] for i in used])
            if len(used)
            else np.zeros((0, *self.shape), np.uint8)
        )
        n = len(kept)
        counts = Counter({"no_image": int((~keep).sum())} if (~keep).any() else {})
        return kept.with_images(frames, inverse[:n], inverse[n:]), counts


def _nearest(stamps: np.ndarray, query: np.ndarray, tol_ns: float) -> tuple[np.ndarray, np.ndarray]:
    """(index of the nearest of the sorted ``stamps`` to each query stamp, whether within
    ``tol_ns``)."""
    right = (
        np.clip(np.searchsorted(stamps, query), 1, len(stamps) - 1)
        if len(stamps) > 1
        else np.zeros(len(query), np.int64)
    )
    left = np.maximum(right - 1, 0)
    pick = np.where(np.abs(stamps[left] - query) <= np.abs(stamps[right] - query), left, right)
    return pick, np.abs(stamps[pick] - query) <= tol_ns


def read_bag_frames(
    path, topic: str, every: int = 1, limit: int = 64
) -> tuple[np.ndarray, np.ndarray]:
    """(stamps (K,) ns, frames (K, H, W, 3) uint8) of every ``every``-th image on ``topic`` of
    the bag at ``path``, in log-time order, at most ``limit``. BagError if there are none."""
    frames = ImageFrames()
    with BagReader(path) as bag:
        bag.require(topic, KNOWN_TYPES[IMAGES])
        for i, (_, _, data) in enumerate(bag.messages([topic], raw=True)):
            if len(frames) >= limit:
                break
            if i % every == 0:
                try:
                    frames.add_msg(bag.decode(topic, data))
                except Exception:  # noqa: BLE001 - a damaged image is not shown
                    continue
    if not len(frames):
        raise BagError(f"bag {path}: no readable images on {topic}")
    return frames.arrays()


def contact_sheet(frames: np.ndarray, columns: int, gap: int = 1) -> np.ndarray:
    """Frames (K, H, W, 3) uint8 tiled row by row, ``columns`` per row, ``gap`` black pixels
    between them: (rows·(H + gap) − gap, columns·(W + gap) − gap, 3) uint8."""
    k, h, w, _ = frames.shape
    rows = -(-k // columns)
    sheet = np.zeros((rows * (h + gap) - gap, columns * (w + gap) - gap, 3), np.uint8)
    for i, frame in enumerate(frames):
        r, c = divmod(i, columns)
        sheet[r * (h + gap) : r * (h + gap) + h, c * (w + gap) : c * (w + gap) + w] = frame
    return sheet
