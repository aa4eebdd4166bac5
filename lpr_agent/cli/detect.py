"""``lpr-agent detect PATH…``: read plates on images, folders or videos and print them."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from lpr_agent.cli._common import add_config_argument, config_or_exit, examples


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "detect",
        help="read plates on images, image folders or video files",
        description="Run the plate pipeline on images (one result per image, every plate on "
        "it) or videos (tracked: one result per vehicle) and print the plates.",
        **examples("lpr-agent detect photo.jpg", "lpr-agent detect photos/ --json > plates.jsonl",
                   "lpr-agent detect video.mp4 --annotate out/ --region eu"),
    )
    parser.add_argument("paths", nargs="+", type=Path, metavar="PATH",
                        help="image, folder of images, or video file")
    parser.add_argument("--json", action="store_true",
                        help="print one DetectionResult JSON object per line")
    parser.add_argument("--images", action="store_true",
                        help="with --json: include the base64 annotated image and crops")
    parser.add_argument("--annotate", type=Path, metavar="OUT",
                        help="write annotated JPEGs: a file for a single image, else a folder")
    parser.add_argument("--region", metavar="NAME",
                        help="plate region: auto, eu, us, br or one of the config's "
                        "[detector.regions] (overrides the config)")
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


def run(args: argparse.Namespace) -> int:
    import cv2

    from lpr_agent.detect.files import VideoRun, detect_images, expand_paths, is_image
    from lpr_agent.detect.output import annotate_many
    from lpr_agent.detect.reader import PlateReader

    config = config_or_exit(args)
    overrides: dict[str, Any] = {}
    if args.region:
        overrides["region"] = args.region
    if args.threads:
        overrides["threads"] = args.threads
    try:
        # Validated, so an unknown region is reported instead of ignored.
        detector = type(config.detector).model_validate(
            {**config.detector.model_dump(), **overrides})
    except ValueError as exc:
        print(f"lpr-agent detect: {exc}", file=sys.stderr)
        return 2
    camera = config.camera

    files = expand_paths(args.paths)
    missing = [p for p in files if not p.exists()]
    if missing:
        print(f"lpr-agent detect: no such file: {missing[0]}", file=sys.stderr)
        return 2
    reader = PlateReader(detector)
    reader.load()
    show_progress = not args.no_progress and sys.stderr.isatty()
    single_image = len(files) == 1 and is_image(files[0])
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

    images = [p for p in files if is_image(p)]
    videos = [p for p in files if not is_image(p)]
    progress = Progress(len(images), show_progress and len(images) > 5)
    status = 0
    for item in detect_images(images, reader, detector, camera, with_images=args.images):
        progress.step(item.path.name)
        if item.result is None or item.image is None:
            print(f"lpr-agent detect: {item.error}", file=sys.stderr)
            status = 1
            continue
        emit(item.path.name, item.result)
        if args.annotate:
            out = args.annotate if single_image else args.annotate / f"{item.path.stem}.jpg"
            cv2.imwrite(str(out), annotate_many(item.image, [(b, t) for b, t, _ in item.plates]))
    progress.close()

    for path in videos:
        try:
            video = VideoRun(path, reader, config.source, detector, camera)
        except Exception as exc:  # report and go on with the next input
            print(f"lpr-agent detect: cannot open video {path}: {exc}", file=sys.stderr)
            status = 1
            continue
        video_progress = Progress(video.total_frames, show_progress)
        for step in video:
            if step.frame_index is None:
                video_progress.close()
                label = path.name
            else:
                video_progress.step()
                label = f"{path.name}#{step.frame_index}"
            for result in step.results:
                emit(label, result)
        if args.annotate:
            _write_video_annotations(args.annotate, path, video.results)
    return status


def _write_video_annotations(folder: Path, video: Path, results: list[Any]) -> None:
    import base64

    for k, result in enumerate(results):
        if result.annotated_image:
            (folder / f"{video.stem}_{k + 1}.jpg").write_bytes(
                base64.b64decode(result.annotated_image))
