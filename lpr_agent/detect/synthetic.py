"""Synthetic camera: car-like boxes carrying rendered plates, with ground truth.

Used by the demo and the tests, so no data file is needed. Frames are made
on demand; time is simulated (``index / fps``) so the tracker sees the same
timing however fast or slow the detector runs.

URL: ``synthetic:?fps=10&plates=AB123CD,XY987ZT&seed=1&once=1&cars=2&width=1280&height=720``

* ``plates``: comma-separated plate texts, or a number of random plates (from ``seed``);
  without it every car gets a new random plate
* ``count``: how many random plates in ``once`` mode (default 5)
* ``once=1``: every plate crosses the view exactly once, then the source ends
* ``cars``: cars on the road at the same time (lanes), default 1
* ``speed``: seconds a car takes to cross the frame (default 3)
* ``style``: plate style and random layouts, ``eu`` (default), ``us`` or ``br``
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field

import cv2
import numpy as np

from lpr_agent.detect.config import SourceConfig
from lpr_agent.detect.frame import Frame, SourceError, url_options

# Many national schemes leave out I, O and Q because they look like 1 and 0;
# the synthetic plates do the same so "exact match" measures the reader.
PLATE_LETTERS = "ABCDEFGHJKLMNPRSTUVWXYZ"
PLATE_DIGITS = "0123456789"
RANDOM_FORMATS = ("LLNNNLL", "LLLNNNN", "LLLNLNN", "NLLNNNN", "LLNNLLL")


@dataclass
class SyntheticOptions:
    width: int = 1280
    height: int = 720
    fps: float = 10.0
    seed: int = 0
    plates: list[str] = field(default_factory=list)
    count: int = 5
    once: bool = False
    cars: int = 1
    speed: float = 3.0
    style: str = "eu"  # plate style and random layouts: eu, us, br


@dataclass(frozen=True)
class SyntheticPlate:
    text: str
    box: tuple[float, float, float, float]  # plate box x1, y1, x2, y2
    car_box: tuple[float, float, float, float]
    car_id: int


def parse_synthetic_url(url: str, config: SourceConfig | None = None) -> SyntheticOptions:
    opts = url_options(url)
    out = SyntheticOptions()
    if config is not None:
        out.width = config.width or out.width
        out.height = config.height or out.height
        # Simulated time runs at the real rate when the detector keeps up.
        out.fps = config.max_fps
    try:
        out.width = int(opts.get("width", out.width))
        out.height = int(opts.get("height", out.height))
        out.fps = float(opts.get("fps", out.fps))
        out.seed = int(opts.get("seed", out.seed))
        out.count = int(opts.get("count", out.count))
        out.cars = max(1, int(opts.get("cars", out.cars)))
        out.speed = float(opts.get("speed", out.speed))
    except ValueError as exc:
        raise ValueError(f"bad synthetic source option in {url!r}: {exc}") from None
    out.once = opts.get("once", "0").lower() in {"1", "true", "yes"}
    out.style = opts.get("style", out.style).lower()
    if out.style not in PLATE_STYLES:
        raise ValueError(f"synthetic style must be one of {PLATE_STYLES}: {url!r}")
    plates = opts.get("plates", "").strip()
    if plates.isdigit():  # plates=N: N random plates
        out.count = int(plates)
        rng = random.Random(out.seed)
        out.plates = [random_style_plate(rng, out.style) for _ in range(out.count)]
    elif plates:
        out.plates = [p.strip().upper() for p in plates.split(",") if p.strip()]
    if out.fps <= 0 or out.width < 320 or out.height < 240:
        raise ValueError(f"synthetic source needs fps > 0 and at least 320x240: {url!r}")
    return out


def random_plate(rng: random.Random, fmt: str | None = None) -> str:
    fmt = fmt or rng.choice(RANDOM_FORMATS)
    return "".join(rng.choice(PLATE_LETTERS if k == "L" else PLATE_DIGITS) for k in fmt)


PLATE_STYLES = ("eu", "us", "br")
# Random layouts per style (the region's own, in ``regions/``): US covers every
# kind the rules must keep - 1ABC234, ABC1234, 123ABC, all-digit and vanity.
STYLE_FORMATS: dict[str, tuple[str, ...]] = {
    "eu": RANDOM_FORMATS,
    "us": ("NLLLNNN", "LLLNNNN", "NNNLLL", "NNNNNNN", "NNNNNN", "VANITY"),
    "br": ("LLLNLNN", "LLLNNNN"),
}
# Short state-like captions: the reader must not take them for vanity plates.
US_CAPTIONS = ("OHIO", "TEXAS", "IDAHO", "MAINE", "UTAH", "KANSAS")


def random_style_plate(rng: random.Random, style: str) -> str:
    fmt = rng.choice(STYLE_FORMATS[style])
    if fmt == "VANITY":  # personalised: 5-7 letters
        return "".join(rng.choice(PLATE_LETTERS) for _ in range(rng.randint(5, 7)))
    return random_plate(rng, fmt)


def render_plate(text: str, height: int, style: str = "eu") -> np.ndarray:
    """A plate in a region's style: EU (blue strip), US (caption, 2:1), BR (Mercosur band)."""
    if style == "us":
        return _render_us(text, height)
    if style == "br":
        return _render_br(text, height)
    font = cv2.FONT_HERSHEY_DUPLEX
    thickness = max(2, round(height / 16))
    scale = cv2.getFontScaleFromHeight(font, int(height * 0.56), thickness)
    (tw, th), _ = cv2.getTextSize(text, font, scale, thickness)
    width = int(tw + height * 0.9)
    plate = np.full((height, width, 3), 245, np.uint8)
    cv2.rectangle(plate, (1, 1), (width - 2, height - 2), (30, 30, 30), max(2, height // 20))
    # A blue EU-style strip makes the plate look like one; the reader must
    # cope with it on real plates anyway.
    strip = int(height * 0.32)
    cv2.rectangle(plate, (3, 3), (strip, height - 4), (150, 60, 10), -1)
    x = strip + (width - strip - tw) // 2
    y = (height + th) // 2
    cv2.putText(plate, text, (x, y), font, scale, (15, 15, 15), thickness, cv2.LINE_AA)
    return plate


def _render_us(text: str, height: int) -> np.ndarray:
    """2:1, dark blue serial, a small state caption above it (not part of the plate text)."""
    font = cv2.FONT_HERSHEY_DUPLEX
    width = height * 2
    plate = np.full((height, width, 3), (235, 240, 245), np.uint8)
    cv2.rectangle(plate, (1, 1), (width - 2, height - 2), (60, 40, 20), max(2, height // 24))
    thickness = max(2, round(height / 16))
    scale = cv2.getFontScaleFromHeight(font, int(height * 0.42), thickness)
    (tw, th), _ = cv2.getTextSize(text, font, scale, thickness)
    scale *= min(1.0, width * 0.86 / tw)  # long vanity plates are squeezed, as on real ones
    (tw, th), _ = cv2.getTextSize(text, font, scale, thickness)
    caption = US_CAPTIONS[sum(map(ord, text)) % len(US_CAPTIONS)]
    cscale = cv2.getFontScaleFromHeight(font, int(height * 0.13), 1)
    (cw, ch), _ = cv2.getTextSize(caption, font, cscale, 1)
    cv2.putText(plate, caption, ((width - cw) // 2, int(height * 0.08) + ch), font, cscale,
                (40, 40, 170), 1, cv2.LINE_AA)
    cv2.putText(plate, text, ((width - tw) // 2, int(height * 0.5 + th / 2) + height // 20),
                font, scale, (90, 40, 20), thickness, cv2.LINE_AA)
    return plate


def _render_br(text: str, height: int) -> np.ndarray:
    """Mercosur: white, black characters, a blue band with BRASIL across the top."""
    font = cv2.FONT_HERSHEY_DUPLEX
    width = round(height * 3.1)
    plate = np.full((height, width, 3), 245, np.uint8)
    band = int(height * 0.22)
    cv2.rectangle(plate, (0, 0), (width - 1, band), (150, 60, 10), -1)
    cv2.rectangle(plate, (1, 1), (width - 2, height - 2), (30, 30, 30), max(2, height // 24))
    bscale = cv2.getFontScaleFromHeight(font, int(band * 0.6), 1)
    (bw, bh), _ = cv2.getTextSize("BRASIL", font, bscale, 1)
    cv2.putText(plate, "BRASIL", ((width - bw) // 2, (band + bh) // 2), font, bscale,
                (250, 250, 250), 1, cv2.LINE_AA)
    thickness = max(2, round(height / 15))
    scale = cv2.getFontScaleFromHeight(font, int(height * 0.5), thickness)
    (tw, th), _ = cv2.getTextSize(text, font, scale, thickness)
    y = band + (height - band + th) // 2
    cv2.putText(plate, text, ((width - tw) // 2, y), font, scale, (10, 10, 10), thickness,
                cv2.LINE_AA)
    return plate


@dataclass
class _Car:
    car_id: int
    text: str
    lane: int
    start_frame: int
    color: tuple[int, int, int]
    plate: np.ndarray


class SyntheticSource:
    live = False

    def __init__(self, options: SyntheticOptions) -> None:
        self.options = options
        self.description = "synthetic"
        self._rng = random.Random(options.seed)
        self._index = 0
        self._cars: list[_Car] = []
        self._queue: list[str] = []
        self._next_id = 0
        self._background = self._make_background()
        self._t0_wall = time.time()
        self._t0_mono = time.monotonic()
        self._opened = False
        self.generated: list[str] = []  # plates that entered the view, in order

    # --- geometry ------------------------------------------------------------------
    @property
    def car_size(self) -> tuple[int, int]:
        w = int(self.options.width * 0.34)
        return w, int(w * 0.55)

    def _lane_y(self, lane: int) -> int:
        h = self.options.height
        lanes = self.options.cars
        _, car_h = self.car_size
        top = int(h * 0.27)
        span = max(0, h - top - car_h - 10)
        return top + (span * lane // max(1, lanes - 1) if lanes > 1 else span // 2)

    def _frames_to_cross(self) -> int:
        return max(4, round(self.options.speed * self.options.fps))

    def _car_x(self, car: _Car, index: int) -> float:
        w = self.options.width
        car_w, _ = self.car_size
        progress = (index - car.start_frame) / self._frames_to_cross()
        return -car_w + progress * (w + car_w)

    # --- FrameSource -----------------------------------------------------------------
    def open(self) -> None:
        if self._opened and self.options.once and not self._queue and not self._cars:
            raise SourceError("synthetic run finished")
        if not self._opened:
            self._queue = list(self.options.plates) or (
                [random_style_plate(self._rng, self.options.style)
                 for _ in range(self.options.count)]
                if self.options.once else [])
            self._opened = True

    def close(self) -> None:
        pass

    def read(self) -> Frame | None:
        if not self._opened:
            raise SourceError("source is not open")
        self._index += 1
        index = self._index
        self._spawn(index)
        self._cars = [c for c in self._cars if self._car_x(c, index) < self.options.width]
        if self.options.once and not self._cars and not self._queue:
            return None
        image = self._background.copy()
        truth = [self._draw_car(image, car, index) for car in self._cars]
        elapsed = index / self.options.fps
        return Frame(image=image, index=index, wall_time=self._t0_wall + elapsed,
                     monotonic=self._t0_mono + elapsed, truth=truth)

    def _spawn(self, index: int) -> None:
        lanes_busy = {c.lane for c in self._cars}
        for lane in range(self.options.cars):
            if lane in lanes_busy:
                continue
            # Stagger lanes so cars do not move in lock-step.
            if self._cars and self._rng.random() < 0.85:
                continue
            if self.options.once:
                if not self._queue:
                    return
                text = self._queue.pop(0)
            elif self.options.plates:
                text = self.options.plates[self._next_id % len(self.options.plates)]
            else:
                text = random_style_plate(self._rng, self.options.style)
            color = tuple(int(v) for v in self._rng.choice(
                [(40, 40, 160), (160, 90, 30), (200, 200, 200), (40, 40, 40), (30, 120, 40),
                 (20, 140, 200), (120, 120, 120)]))
            _, car_h = self.car_size
            plate = render_plate(text, max(24, int(car_h * 0.16)), self.options.style)
            self._cars.append(_Car(self._next_id, text, lane, index, color, plate))  # type: ignore[arg-type]
            self._next_id += 1
            self.generated.append(text)
            return  # one new car per frame, so lanes do not move in lock-step

    # --- drawing ---------------------------------------------------------------------
    def _make_background(self) -> np.ndarray:
        w, h = self.options.width, self.options.height
        img = np.zeros((h, w, 3), np.uint8)
        horizon = int(h * 0.25)
        sky = np.linspace(200, 150, horizon, dtype=np.float32)[:, None]
        img[:horizon] = np.stack([sky + 30, sky + 10, sky - 20], axis=-1).clip(0, 255).astype(
            np.uint8)
        road = np.linspace(90, 60, h - horizon, dtype=np.float32)[:, None]
        img[horizon:] = np.repeat(road, 3, axis=1)[:, None, :].astype(np.uint8)
        # Buildings on the horizon give the text detector something to ignore.
        rng = random.Random(self.options.seed + 1)
        x = 0
        while x < w:
            bw = rng.randint(60, 160)
            bh = rng.randint(horizon // 3, horizon)
            shade = rng.randint(90, 140)
            cv2.rectangle(img, (x, horizon - bh), (x + bw, horizon), (shade, shade, shade + 10), -1)
            x += bw + rng.randint(5, 30)
        for y in range(horizon + 40, h, 140):
            for x in range(0, w, 160):
                cv2.rectangle(img, (x, y), (x + 80, y + 6), (220, 220, 220), -1)
        noise = np.random.default_rng(self.options.seed).normal(0, 3, img.shape)
        return np.clip(img.astype(np.float32) + noise, 0, 255).astype(np.uint8)

    def _draw_car(self, img: np.ndarray, car: _Car, index: int) -> SyntheticPlate:
        car_w, car_h = self.car_size
        x = int(self._car_x(car, index))
        y = self._lane_y(car.lane)
        body = car.color
        dark = tuple(max(0, c - 60) for c in body)
        # shadow, wheels, body, cabin, windscreen, lights
        cv2.ellipse(img, (x + car_w // 2, y + car_h - 4), (car_w // 2 + 10, 14), 0, 0, 360,
                    (35, 35, 35), -1)
        for wx in (x + car_w // 5, x + car_w * 4 // 5):
            cv2.circle(img, (wx, y + car_h - 18), car_h // 7, (20, 20, 20), -1)
        cv2.rectangle(img, (x, y + car_h // 3), (x + car_w, y + car_h - 20), body, -1)
        cabin = np.array([[x + car_w // 6, y + car_h // 3], [x + car_w // 4, y],
                          [x + car_w * 3 // 4, y], [x + car_w * 5 // 6, y + car_h // 3]])
        cv2.fillPoly(img, [cabin], dark)
        glass = np.array([[x + car_w // 5 + 8, y + car_h // 3 - 6], [x + car_w // 4 + 10, y + 10],
                          [x + car_w * 3 // 4 - 10, y + 10],
                          [x + car_w * 4 // 5 - 8, y + car_h // 3 - 6]])
        cv2.fillPoly(img, [glass], (170, 140, 110))
        for lx in (x + 12, x + car_w - 52):
            cv2.rectangle(img, (lx, y + car_h // 3 + 14), (lx + 40, y + car_h // 3 + 34),
                          (60, 200, 240), -1)
        ph, pw = car.plate.shape[:2]
        px = x + (car_w - pw) // 2
        py = y + car_h - 20 - ph - car_h // 12
        self._blit(img, car.plate, px, py)
        return SyntheticPlate(
            text=car.text,
            box=self._clip_box(px, py, px + pw, py + ph),
            car_box=self._clip_box(x, y, x + car_w, y + car_h),
            car_id=car.car_id,
        )

    def _clip_box(self, x1: float, y1: float, x2: float, y2: float) -> tuple[float, ...]:
        w, h = self.options.width, self.options.height
        return (max(0.0, min(w, x1)), max(0.0, min(h, y1)),
                max(0.0, min(w, x2)), max(0.0, min(h, y2)))

    @staticmethod
    def _blit(img: np.ndarray, patch: np.ndarray, x: int, y: int) -> None:
        h, w = img.shape[:2]
        ph, pw = patch.shape[:2]
        x1, y1 = max(0, x), max(0, y)
        x2, y2 = min(w, x + pw), min(h, y + ph)
        if x2 <= x1 or y2 <= y1:
            return
        img[y1:y2, x1:x2] = patch[y1 - y:y2 - y, x1 - x:x2 - x]


def plate_scene(texts: list[str], style: str = "eu", plate_height: int = 48,
                width: int = 1280, height: int = 720, seed: int = 0) -> Frame:
    """One still frame: a car per plate, side by side, each with its plate (ground truth).

    For tests of plate size and style: ``plate_height`` is the plate's height in
    pixels (the characters are about half of it).
    """
    source = SyntheticSource(SyntheticOptions(width=width, height=height, seed=seed))
    image = source._background.copy()
    rng = random.Random(seed)
    truth = []
    slot = width // max(1, len(texts))
    for k, text in enumerate(texts):
        plate = render_plate(text, plate_height, style)
        ph, pw = plate.shape[:2]
        car_w = min(slot - 20, max(pw * 3, 120))
        car_h = int(car_w * 0.55)
        cx = slot * k + slot // 2
        y = int(height * 0.62) - car_h // 2 + rng.randint(-20, 20)
        x = cx - car_w // 2
        color = rng.choice([(40, 40, 160), (160, 90, 30), (200, 200, 200), (40, 40, 40)])
        cv2.rectangle(image, (x, y), (x + car_w, y + car_h), color, -1)
        px, py = cx - pw // 2, y + car_h - ph - car_h // 10
        SyntheticSource._blit(image, plate, px, py)
        truth.append(SyntheticPlate(text=text, box=(px, py, px + pw, py + ph),
                                    car_box=(x, y, x + car_w, y + car_h), car_id=k))
    return Frame(image=image, index=1, wall_time=time.time(), monotonic=time.monotonic(),
                 truth=truth)
