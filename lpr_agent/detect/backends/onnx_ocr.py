"""Default CPU backend: PP-OCR text detection (DB) + recognition (CTC) on onnxruntime.

We run the ONNX files directly instead of through the ``rapidocr`` Python
API: it lets us shrink frames ourselves (RapidOCR upscales 720p frames),
pin the thread count, switch off spinning on a 2-core camera, decode CTC
restricted to plate characters, and keep the process small.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import cv2
import numpy as np

from lpr_agent.detect.backends.base import CharRead, RegionBox, TextRead
from lpr_agent.detect.backends.rec_cut import cut_recogniser, dictionary
from lpr_agent.detect.models import DEFAULT_MODELS, model_path, sha256_of
from lpr_agent.malloc import M_MMAP_THRESHOLD, mallopt

log = logging.getLogger(__name__)

LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
DIGITS = "0123456789"
ALNUM = DIGITS + LETTERS


# Weak lines (see OnnxOcrBackend._weak_lines), in detection-map pixels.
WEAK_JOIN_PX = 5  # characters closer than this join into one line
WEAK_MIN_PX = 3
WEAK_MAX_PX = 24  # taller text is read by the first pass or is not a small plate
WEAK_MIN_PEAK = 0.6  # the detector must have been fairly sure of some character
WEAK_MIN_BLOBS = 3  # characters (separate blobs) in a weak line


def _inside(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    """How much of box ``a`` lies inside box ``b`` (0..1)."""
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    area = (a[2] - a[0]) * (a[3] - a[1])
    return ix * iy / area if area > 0 else 0.0


def return_freed_memory(threshold: int = 256 * 1024) -> bool:
    """Make glibc give large freed blocks back to the OS at once.

    Without onnxruntime's arena every inference allocates its feature maps
    (tens of MB) with malloc; glibc raises its mmap threshold after such
    frees and then keeps the memory in the heap, so RSS settles near the
    peak of every input shape ever seen (measured: 250 → 123 MB steady,
    360 → 203 MB peak for det 960x544 + rec batch 8, at no measurable CPU
    cost). A fixed threshold keeps big blocks in mmap, returned on free.
    """
    return mallopt(M_MMAP_THRESHOLD, threshold)


def _softmax(logits: np.ndarray) -> np.ndarray:
    """Softmax over the last axis (the cut recogniser emits logits)."""
    e = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def _order_quad(points: np.ndarray) -> np.ndarray:
    """Corners as top-left, top-right, bottom-right, bottom-left."""
    pts = points[np.argsort(points[:, 0])]
    left, right = pts[:2], pts[2:]
    tl, bl = left[np.argsort(left[:, 1])]
    tr, br = right[np.argsort(right[:, 1])]
    return np.array([tl, tr, br, bl], dtype=np.float32)


def crop_quad(frame: np.ndarray, quad: np.ndarray) -> np.ndarray:
    """Perspective-rectify a region to an upright crop."""
    width = max(round(max(np.linalg.norm(quad[0] - quad[1]),
                              np.linalg.norm(quad[2] - quad[3]))), 1)
    height = max(round(max(np.linalg.norm(quad[0] - quad[3]),
                               np.linalg.norm(quad[1] - quad[2]))), 1)
    dst = np.array([[0, 0], [width, 0], [width, height], [0, height]], dtype=np.float32)
    matrix = cv2.getPerspectiveTransform(quad.astype(np.float32), dst)
    return cv2.warpPerspective(frame, matrix, (width, height), flags=cv2.INTER_CUBIC,
                               borderMode=cv2.BORDER_REPLICATE)


class OnnxOcrBackend:
    name = "onnx"

    def __init__(
        self,
        threads: int = 2,
        det_max_side: int = 960,
        det_threshold: float = 0.3,
        det_box_threshold: float = 0.5,
        unclip_ratio: float = 1.6,
        det_model: str | None = None,
        rec_model: str | None = None,
        rec_batch: int = 8,
        return_memory: bool = True,
        cut_classes: bool = True,
    ) -> None:
        self.threads = threads
        self.det_max_side = det_max_side
        self.det_threshold = det_threshold
        self.det_box_threshold = det_box_threshold
        self.unclip_ratio = unclip_ratio
        self.det_model_override = det_model
        self.rec_model_override = rec_model
        self.rec_batch = rec_batch
        self.return_memory = return_memory
        self.cut_classes = cut_classes
        self._rec_logits = False  # True when the cut recogniser (logits) is loaded
        self._det = None
        self._rec = None
        self._det_path: Path | None = None
        self._rec_path: Path | None = None

    # --- loading -----------------------------------------------------------------
    def _session(self, path: Path | bytes):  # -> onnxruntime.InferenceSession
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = max(1, self.threads)
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # Spinning threads burn a whole core each while idle; on a 2-core
        # camera that steals CPU from capture and JPEG encoding.
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        opts.add_session_config_entry("session.inter_op.allow_spinning", "0")
        # The arena keeps the high-water mark of every input shape forever;
        # without it RSS follows actual use (frames vary in size).
        opts.enable_cpu_mem_arena = False
        opts.log_severity_level = 3
        model = path if isinstance(path, bytes) else str(path)
        return ort.InferenceSession(model, sess_options=opts,
                                    providers=["CPUExecutionProvider"])

    @property
    def loaded(self) -> bool:
        return self._det is not None and self._rec is not None

    def load(self) -> None:
        if self.loaded:
            return
        if self.return_memory:
            return_freed_memory()
        self._det_path = model_path("det", self.det_model_override)
        self._rec_path = model_path("rec", self.rec_model_override)
        log.info("loading text detector %s", self._det_path)
        self._det = self._session(self._det_path)
        log.info("loading text recogniser %s", self._rec_path)
        chars = self._load_recogniser(self._rec_path)
        self._det_input = self._det.get_inputs()[0].name
        self._rec_input = self._rec.get_inputs()[0].name
        self._build_vocab(chars)

    def _load_recogniser(self, path: Path) -> list[str]:
        """Load the recogniser, cut to the plate alphabet when possible; its class characters."""
        if self.cut_classes:
            try:
                cut = cut_recogniser(path)
            except (ValueError, KeyError, ImportError) as exc:
                # A replacement model of another shape still works, only slower.
                log.warning("cannot cut recogniser %s to plate classes (%s); using it whole",
                            path, exc)
            else:
                self._rec = self._session(cut.model)
                self._rec_logits = True
                return cut.characters
        self._rec = self._session(path)
        self._rec_logits = False
        return dictionary(self._rec.get_modelmeta().custom_metadata_map["character"])

    def _build_vocab(self, chars: list[str]) -> None:
        assert self._rec is not None
        n_out = self._rec.get_outputs()[0].shape[-1]
        if isinstance(n_out, int) and n_out != len(chars):
            raise RuntimeError(f"recogniser has {n_out} classes but its dictionary {len(chars)}")
        # Group the classes (96 of the cut model, ~18k of the full one) into:
        # blank, 36 plate characters (upper and lower case merged, fullwidth
        # forms ignored) and "anything else",
        # which we treat as a separator. Restricting the decode this way
        # stops Chinese/symbol classes from swallowing a plate character.
        index: dict[str, list[int]] = {c: [] for c in ALNUM}
        for i, ch in enumerate(chars):
            up = ch.upper()
            if len(ch) == 1 and up in index:
                index[up].append(i)
        self._alnum_idx = [np.array(index[c], dtype=np.int64) for c in ALNUM]
        self._n_classes = len(chars)

    def describe(self) -> dict[str, object]:
        out: dict[str, object] = {"backend": self.name, "threads": self.threads,
                                  "det_max_side": self.det_max_side}
        for key, path in (("det", self._det_path), ("rec", self._rec_path)):
            if path is None:
                continue
            info = DEFAULT_MODELS[key]
            out[f"{key}_model"] = {
                "file": path.name, "package": info.package, "version": info.version,
                "sha256": sha256_of(path), "licence": info.licence,
            }
        return out

    # --- detection -----------------------------------------------------------------
    def find_regions(self, frame: np.ndarray) -> list[RegionBox]:
        if self._det is None:
            self.load()
        assert self._det is not None
        h, w = frame.shape[:2]
        scale = min(1.0, self.det_max_side / max(h, w))
        nh = max(32, round(h * scale / 32) * 32)
        nw = max(32, round(w * scale / 32) * 32)
        img = cv2.resize(frame, (nw, nh), interpolation=cv2.INTER_AREA if scale < 1
                         else cv2.INTER_LINEAR)
        blob = (img.astype(np.float32) * (2.0 / 255.0) - 1.0).transpose(2, 0, 1)[None]
        pred = self._det.run(None, {self._det_input: blob})[0][0, 0]
        return self._db_boxes(pred, w / nw, h / nh)

    def _db_boxes(self, pred: np.ndarray, sx: float, sy: float) -> list[RegionBox]:
        mask = (pred > self.det_threshold).astype(np.uint8)
        mask = cv2.dilate(mask, np.ones((2, 2), np.uint8))
        contours, _ = cv2.findContours(mask, cv2.RETR_LIST, cv2.CHAIN_APPROX_SIMPLE)
        boxes: list[RegionBox] = []
        ph, pw = pred.shape
        for contour in contours[:1000]:
            if len(contour) < 4:
                continue
            (cx, cy), (rw, rh), angle = cv2.minAreaRect(contour)
            if min(rw, rh) < 3:
                continue
            # Mean probability inside the contour's bounding rectangle region.
            x, y, bw, bh = cv2.boundingRect(contour)
            local = np.zeros((bh, bw), np.uint8)
            cv2.fillPoly(local, [contour.reshape(-1, 2) - [x, y]], 1)
            score = float(cv2.mean(pred[y:y + bh, x:x + bw], local)[0])
            if score < self.det_box_threshold:
                continue
            # DB shrinks text kernels during training; grow the box back by
            # area * ratio / perimeter on every side, as the paper does.
            dist = rw * rh * self.unclip_ratio / (2 * (rw + rh))
            rect = ((cx, cy), (rw + 2 * dist, rh + 2 * dist), angle)
            if min(rect[1]) < 5:
                continue
            pts = cv2.boxPoints(rect)
            pts[:, 0] = np.clip(pts[:, 0], 0, pw) * sx
            pts[:, 1] = np.clip(pts[:, 1], 0, ph) * sy
            quad = _order_quad(pts)
            boxes.append(RegionBox(quad=quad, score=score))
        return boxes + self._weak_lines(pred, mask, boxes, sx, sy)

    def _weak_lines(self, pred: np.ndarray, mask: np.ndarray, strong: list[RegionBox],
                    sx: float, sy: float) -> list[RegionBox]:
        """Small text the box rules dropped: characters that did not join into a line.

        At the shrunk scale a small plate's text kernel breaks into per-character
        blobs thinner than a box may be; joined horizontally they show where
        a line probably is. Returned as ``weak`` regions: never read as they
        are, only looked at again at full resolution (:mod:`..second_look`).
        """
        joined = cv2.dilate(mask, np.ones((1, WEAK_JOIN_PX), np.uint8))
        contours, _ = cv2.findContours(joined, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        _, blobs = cv2.connectedComponents(mask)
        taken = [r.bbox for r in strong]
        out: list[RegionBox] = []
        for contour in contours[:1000]:
            x, y, w, h = cv2.boundingRect(contour)
            if not WEAK_MIN_PX <= h <= WEAK_MAX_PX or w < 1.5 * h:
                continue
            if float(pred[y:y + h, x:x + w].max()) < WEAK_MIN_PEAK:
                continue
            # A line of characters is several blobs; a lane marking or a
            # pole is one long stroke.
            if len(np.unique(blobs[y:y + h, x:x + w])) - 1 < WEAK_MIN_BLOBS:
                continue
            box = (x * sx, y * sy, (x + w) * sx, (y + h) * sy)
            if any(_inside(box, t) > 0.5 for t in taken):
                continue
            quad = np.array([[box[0], box[1]], [box[2], box[1]], [box[2], box[3]],
                             [box[0], box[3]]], np.float32)
            out.append(RegionBox(quad=quad, score=float(pred[y:y + h, x:x + w].mean()),
                                 weak=True))
        return out

    # --- recognition ---------------------------------------------------------------
    def read_regions(self, frame: np.ndarray, regions: list[RegionBox]) -> list[TextRead]:
        crops = [crop_quad(frame, r.quad) for r in regions]
        return self.read_crops(crops)

    def read_crops(self, crops: list[np.ndarray]) -> list[TextRead]:
        if self._rec is None:
            self.load()
        assert self._rec is not None
        results: list[TextRead] = [TextRead() for _ in crops]
        prepared = []
        for i, crop in enumerate(crops):
            h, w = crop.shape[:2]
            if h < 2 or w < 2:
                continue
            if h > 1.5 * w:  # vertical text region: turn it to read left-to-right
                crop = cv2.rotate(crop, cv2.ROTATE_90_COUNTERCLOCKWISE)
                h, w = w, h
            prepared.append((w / h, i, crop))
        # Batch crops of similar aspect ratio so padding stays small.
        prepared.sort(key=lambda item: item[0])
        for start in range(0, len(prepared), self.rec_batch):
            chunk = prepared[start:start + self.rec_batch]
            max_ratio = max(ratio for ratio, _, _ in chunk)
            width = math.ceil(48 * max(max_ratio, 4.0))
            batch = np.zeros((len(chunk), 3, 48, width), dtype=np.float32)
            for j, (ratio, _, crop) in enumerate(chunk):
                rw = min(width, math.ceil(48 * ratio))
                img = cv2.resize(crop, (rw, 48), interpolation=cv2.INTER_LINEAR)
                batch[j, :, :, :rw] = (img.astype(np.float32) * (2.0 / 255.0) - 1.0).transpose(
                    2, 0, 1)
            probs = self._rec.run(None, {self._rec_input: batch})[0]
            if self._rec_logits:
                probs = _softmax(probs)
            for j, (_, i, _) in enumerate(chunk):
                results[i] = self._decode(probs[j])
        return results

    def _decode(self, probs: np.ndarray) -> TextRead:
        """Greedy CTC over {blank, 0-9, A-Z, other}; 'other' acts as a separator."""
        alnum = np.stack([probs[:, idx].sum(axis=1) for idx in self._alnum_idx], axis=1)
        blank = probs[:, 0]
        other = np.clip(1.0 - blank - alnum.sum(axis=1), 0.0, 1.0)
        grouped = np.concatenate([blank[:, None], alnum, other[:, None]], axis=1)
        labels = grouped.argmax(axis=1)
        read = TextRead()
        prev = 0
        gap = False
        for t, label in enumerate(labels):
            if label == prev and label != 0:
                # Same character continuing: keep the most confident frame of it.
                if read.chars and 1 <= label <= 36 and grouped[t, label] > read.chars[-1].prob:
                    read.chars[-1] = self._char(alnum[t], int(label), read.chars[-1].gap_before)
                continue
            prev = label
            if label == 0:
                continue
            if label == 37:
                gap = True
                continue
            read.chars.append(self._char(alnum[t], int(label), gap and bool(read.chars)))
            gap = False
        return read

    @staticmethod
    def _char(row: np.ndarray, label: int, gap_before: bool) -> CharRead:
        d = int(row[:10].argmax())
        letter = int(row[10:].argmax())
        return CharRead(
            char=ALNUM[label - 1], prob=float(row[label - 1]),
            letter=LETTERS[letter], letter_prob=float(row[10 + letter]),
            digit=DIGITS[d], digit_prob=float(row[d]), gap_before=gap_before,
            present_prob=float(row.sum()),
        )
