"""PNG renderings for the console: the radiograph and its heatmap overlay, in a short-lived cache.

Uploads are not stored: the rendered PNGs of a prediction live in memory for
:data:`DEFAULT_TTL_S` (least recently added dropped first beyond
:data:`DEFAULT_CAPACITY`), long enough for the page to show them. The overlay
uses the same placement and colours as the heatmap Secondary Capture
(:mod:`results.overlay`), so the console and the PACS show the same picture.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

import cv2
import numpy as np
from numpy.typing import NDArray

from inference.results import Prediction
from results.overlay import fit_size, gray_to_uint8, overlay_heatmap

log = logging.getLogger(__name__)

DEFAULT_TTL_S: Final = 600.0
DEFAULT_CAPACITY: Final = 64
DISPLAY_MAX_SIDE: Final = 1024


class RenderError(ValueError):
    """An image could not be encoded as PNG."""


@dataclass(frozen=True)
class Rendering:
    """The PNGs of one prediction."""

    image: bytes
    heatmap: bytes | None


def encode_png(pixels: NDArray[np.uint8]) -> bytes:
    """8-bit gray ``(h, w)`` or RGB ``(h, w, 3)`` as PNG bytes."""
    bgr = pixels if pixels.ndim == 2 else np.ascontiguousarray(pixels[..., ::-1])
    ok, buffer = cv2.imencode(".png", bgr)
    if not ok:
        raise RenderError(f"cannot encode an image of shape {pixels.shape} as PNG")
    return buffer.tobytes()


def render(gray: NDArray[np.floating], prediction: Prediction) -> Rendering:
    """The radiograph (bright = dense) and, when the prediction has one, its heatmap laid over
    it through its crop box, coloured by the rule of :data:`results.overlay.HEATMAP_RULE`."""
    size = fit_size((int(gray.shape[0]), int(gray.shape[1])), DISPLAY_MAX_SIDE)
    base = gray_to_uint8(gray, size)
    tb, heatmap = prediction.tb_vs_normal, prediction.heatmap
    overlay = None if heatmap is None else encode_png(
        overlay_heatmap(base, heatmap, prediction.crop_box, tb.score, tb.threshold))
    return Rendering(encode_png(base), overlay)


class RenderingCache:
    """Renderings by random key, expiring after ``ttl_s``; thread-safe."""

    def __init__(self, ttl_s: float = DEFAULT_TTL_S, capacity: int = DEFAULT_CAPACITY,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl_s = ttl_s
        self.capacity = capacity
        self._clock = clock
        self._items: OrderedDict[str, tuple[float, Rendering]] = OrderedDict()
        self._lock = threading.Lock()

    def put(self, rendering: Rendering) -> str:
        key = secrets.token_urlsafe(16)
        with self._lock:
            self._expire()
            self._items[key] = (self._clock() + self.ttl_s, rendering)
            while len(self._items) > self.capacity:
                self._items.popitem(last=False)
        return key

    def get(self, key: str) -> Rendering | None:
        with self._lock:
            self._expire()
            item = self._items.get(key)
        return None if item is None else item[1]

    def _expire(self) -> None:
        now = self._clock()
        for key in [k for k, (deadline, _) in self._items.items() if deadline <= now]:
            del self._items[key]
