"""``lpr-agent detect PATH…``: read plates on images, folders or videos and print them."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from lpr_agent.cli._common import add_config_argument, config_or_exit

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "detect",
        help="read plates on images, image folders or video files",
        description="Run the plate pipeline on images (one result per image, every plate on "
        "it) or videos (tracked: one result per vehicle) and print the plates.",
    )
    parser.add_argument("paths", nargs="+", type=Path, metavar="PATH",
                        help="image, folder of images, or video file")
    parser.add_argument("--json", action="store_true",
                        help="print one DetectionResult JSON object per line")
    parser.add_argument("--images", action="store_true",
                        help="with --json: include the base64 annotated image and crops")
    parser.add_argument("--annotate", type=Path, metavar="OUT",
                        help="write annotated JPEGs: a file for a single image, else a folder")
    parser.add_argument("--region", choices=["auto", "eu", "us", "br"],
                        help="plate region (overrides the config)")
    parser.add_argument("--threads", type=int, help="inference threads (overrides the config)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    add_config_argument(parser)
    parser.set_defaults(func=run)


class Progress:
    """A one-line progress bar on stderr (only when stderr is a terminal or forced)."""

    def __init__(self, total: int, enabled: bool) -> None:
        self.total = max(total, 1)
        self.enabled = enabled
        self.done = 0
        self.start = time.monotonic()

    def step(self, label: str = "") -> None:
        self.done += 1
        if not self.enabled:
            return
        frac = min(1.0, self.done / self.total)
        bar = "#" * int(frac * 30)
        rate = self.done / max(time.monotonic() - self.start, 1e-6)
        sys.stderr.write(f"\r[{bar:<30}] {self.done}/{self.total} {rate:5.1f}/s {label[:30]:<30}")
        sys.stderr.flush()

    def close(self) -> None:
        if self.enabled:
            sys.stderr.write("\n")


def _expand(paths: list[Path]) -> list[Path]:
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            files.extend(sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES))
        else:
            files.append(path)
    return files


def run(args: argparse.Namespace) -> int:
    import cv2

    from lpr_agent.detect.output import annotate_many, build_frame_result
    from lpr_agent.detect.pipeline import DetectionPipeline
    from lpr_agent.detect.reader import PlateReader
    from lpr_agent.detect.sources import CaptureSource, Frame

    config = config_or_exit(args)
    overrides: dict[str, Any] = {}
    if args.region:
        overrides["region"] = args.region
    if args.threads:
        overrides["threads"] = args.threads
    detector = config.detector.model_copy(update=overrides)
    camera = config.camera

    files = _expand(args.paths)
    missing = [p for p in files if not p.exists()]
    if missing:
        print(f"lpr-agent detect: no such file: {missing[0]}", file=sys.stderr)
        return 2
    reader = PlateReader(detector)
    reader.load()
    show_progress = not args.no_progress and sys.stderr.isatty()
    single_image = len(files) == 1 and files[0].suffix.lower() in IMAGE_SUFFIXES
    if args.annotate and not single_image:
        args.annotate.mkdir(parents=True, exist_ok=True)

    def emit(name: str, result: Any) -> None:
        if args.json:
            data = result.wire()
            if not args.images:
                data.pop("annotated_image", None)
                data.pop("cropped_plates", None)
            data["source"] = name
            print(json.dumps(data), flush=True)
        else:
            plates = ", ".join(f"{p.text} ({p.confidence:.2f})" for p in result.plate_detections)
            print(f"{name}: {plates or '-'}  [{result.processing_time_ms:.0f} ms]", flush=True)

    images = [p for p in files if p.suffix.lower() in IMAGE_SUFFIXES]
    videos = [p for p in files if p.suffix.lower() not in IMAGE_SUFFIXES]
    progress = Progress(len(images), show_progress and len(images) > 5)
    status = 0
    for path in images:
        image = cv2.imread(str(path))
        progress.step(path.name)
        if image is None:
            print(f"lpr-agent detect: cannot read image {path}", file=sys.stderr)
            status = 1
            continue
        reads = reader.read(image)
        plates = [(p.plate_box, p.text, p.confidence) for p in reads.plates]
        result = build_frame_result(image, plates, reads.total_ms, detector, camera.camera_id,
                                    camera.checkpoint_id, with_images=args.images)
        emit(path.name, result)
        if args.annotate:
            out = args.annotate if single_image else args.annotate / f"{path.stem}.jpg"
            cv2.imwrite(str(out), annotate_many(image, [(b, t) for b, t, _ in plates]))
    progress.close()

    for path in videos:
        cap = cv2.VideoCapture(str(path))
        total = int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) if cap.isOpened() else 0
        fps = cap.get(cv2.CAP_PROP_FPS) if cap.isOpened() else 0
        cap.release()
        results: list[Any] = []
        pipeline = DetectionPipeline(config.source, detector, camera, results.append,
                                     reader=reader)
        source = CaptureSource(str(path), config.source, live=False)
        try:
            source.open()
        except Exception as exc:  # report and go on with the next input
            print(f"lpr-agent detect: cannot open video {path}: {exc}", file=sys.stderr)
            status = 1
            continue
        video_progress = Progress(total, show_progress)
        step = 1.0 / fps if fps and fps > 0 else 0.04
        t0 = time.monotonic()
        while (frame := source.read()) is not None:
            # Video time, not wall time: tracking timeouts follow the footage.
            frame = Frame(frame.image, frame.index, frame.wall_time, t0 + frame.index * step)
            before = len(results)
            pipeline.process_frame(frame)
            video_progress.step()
            for result in results[before:]:
                emit(f"{path.name}#{frame.index}", result)
        source.close()
        before = len(results)
        pipeline.flush()
        video_progress.close()
        for result in results[before:]:
            emit(path.name, result)
        if args.annotate:
            for k, result in enumerate(results):
                if result.annotated_image:
                    import base64

                    (args.annotate / f"{path.stem}_{k + 1}.jpg").write_bytes(
                        base64.b64decode(result.annotated_image))

    return status
