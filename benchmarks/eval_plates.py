"""Evaluate the plate pipeline on a labelled photo folder.

Usage: ``python benchmarks/eval_plates.py ../shared/data/openalpr-eu [--threads 2]``
(several folders: ``DIR:eu OTHER:us``; each folder's results are also reported
on their own, "per_dataset").

The folder holds ``NAME.jpg`` + ``NAME.txt`` (``NAME.jpg<TAB>x<TAB>y<TAB>w<TAB>h<TAB>PLATE``,
one line per plate). Metrics (plates compared after upper-casing and keeping A–Z/0–9):

* ``det_recall_50`` / ``det_recall_30``: labelled plates with an output plate box of IoU ≥ 0.5 / 0.3
* ``exact``: labelled plates whose text is among the image's outputs
* ``within_one``: labelled plates with an output at most one edit (Levenshtein) away
* ``fp_per_image``: outputs that are neither on a labelled plate (IoU ≥ 0.3) nor within one
  edit of its text, per image
* latency at the native size and with each photo placed on a 1280×720 canvas
  (scaled to fit, like a 720p camera frame), mean and p95, and the per-stage split
* ``exact_720p``: exact-match rate on those 720p frames
* ``peak_rss_mb``: the process's peak resident memory (models + buffers)

Baseline, measured in the same run (a child process, so that its memory is its
own): the pipeline with the settings it had before "Recognition v2" - the full
18k-class recogniser, the letter-and-digit rule instead of plate-shape
evidence, no second look (``BASELINE_SETTINGS``). ``--no-baseline`` skips it.

Prints a table, then one JSON line (the last line of output).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np

from lpr_agent.detect.config import DetectorConfig
from lpr_agent.detect.plates import normalise
from lpr_agent.detect.reader import PlateReader, iou
from lpr_agent.detect.tracker import edit_distance


def load_labels(folder: Path) -> list[tuple[Path, list[tuple[tuple[float, ...], str]]]]:
    items = []
    for txt in sorted(folder.glob("*.txt")):
        if txt.name.lower() == "readme.txt":
            continue
        plates = []
        image = None
        for line in txt.read_text(encoding="utf-8").splitlines():
            parts = line.split("\t") if "\t" in line else line.split()
            if len(parts) < 6:
                continue
            image = folder / parts[0]
            x, y, w, h = (float(v) for v in parts[1:5])
            plates.append(((x, y, x + w, y + h), normalise(parts[5])))
        if image is not None and image.exists():
            items.append((image, plates))
    return items


def to_720p(img: np.ndarray) -> np.ndarray:
    h, w = img.shape[:2]
    scale = min(1280 / w, 720 / h)
    resized = cv2.resize(img, (round(w * scale), round(h * scale)),
                         interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    canvas = np.zeros((720, 1280, 3), np.uint8)
    canvas[: resized.shape[0], : resized.shape[1]] = resized
    return canvas


def pct(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    return float(np.percentile(np.array(values), q))


# The pipeline as it was before issue 13 ("Recognition v2"), measured in the
# same run as the baseline: detection at 960 px, the whole 18k-class
# recogniser, the letter-and-digit rule instead of plate-shape evidence, no
# second look at small text.
BASELINE_SETTINGS: dict[str, object] = {
    "det_max_side": 960,
    "cut_recogniser": False,
    "require_letter_and_digit": True,
    "plate_shape_filter": False,
    "second_look_below_px": 0,
}


def evaluate(reader: PlateReader, items: list, with_720p: bool) -> dict:
    """Accuracy and latency of ``reader`` on labelled ``items`` (see the module doc)."""
    n_plates = exact = within = det50 = det30 = fps = 0
    native_ms: list[float] = []
    stage_ms: dict[str, list[float]] = {}
    misses: list[str] = []
    for image_path, labels in items:
        img = cv2.imread(str(image_path))
        if img is None:
            continue
        result = reader.read(img)
        native_ms.append(result.total_ms)
        for k, v in result.timings_ms.items():
            stage_ms.setdefault(k, []).append(v)
        outputs = [(p.plate_box, p.text) for p in result.plates]
        matched: set[int] = set()
        for box, text in labels:
            n_plates += 1
            ious = [iou(box, ob) for ob, _ in outputs]
            det50 += any(v >= 0.5 for v in ious)
            det30 += any(v >= 0.3 for v in ious)
            dists = [edit_distance(text, ot) for _, ot in outputs]
            exact += any(d == 0 for d in dists)
            within += any(d <= 1 for d in dists)
            for k, (_ob, _ot) in enumerate(outputs):
                if ious[k] >= 0.3 or dists[k] <= 1:
                    matched.add(k)
            if not any(d == 0 for d in dists):
                misses.append(f"{image_path.name}: want {text} got "
                              f"{[ot for _, ot in outputs]}")
        for k, (_ob, ot) in enumerate(outputs):
            if k not in matched:
                misses.append(f"{image_path.name}: false plate {ot}")
        fps += len(outputs) - len(matched)

    ms_720: list[float] = []
    stage_720: dict[str, list[float]] = {}
    cpu_720: list[float] = []  # CPU time: less sensitive to other load than wall time
    exact_720 = 0
    if with_720p:
        for image_path, labels in items:
            img = cv2.imread(str(image_path))
            if img is None:
                continue
            frame_720 = to_720p(img)
            cpu0 = time.process_time()
            result_720 = reader.read(frame_720)
            cpu_720.append((time.process_time() - cpu0) * 1000)
            ms_720.append(result_720.total_ms)
            for k, v in result_720.timings_ms.items():
                stage_720.setdefault(k, []).append(v)
            texts = {p.text for p in result_720.plates}
            exact_720 += sum(text in texts for _, text in labels)
    n_images = len(native_ms)
    return {
        "images": n_images,
        "plates": n_plates,
        "exact": round(exact / n_plates, 4),
        "within_one": round(within / n_plates, 4),
        "det_recall_50": round(det50 / n_plates, 4),
        "det_recall_30": round(det30 / n_plates, 4),
        "fp_per_image": round(fps / n_images, 4),
        "mean_ms_native": round(statistics.fmean(native_ms), 1),
        "p95_ms_native": round(pct(native_ms, 95), 1),
        "mean_ms_720p": round(statistics.fmean(ms_720), 1) if ms_720 else None,
        "p95_ms_720p": round(pct(ms_720, 95), 1) if ms_720 else None,
        # CPU ms (all threads) per 720p frame; wall time on an idle machine is
        # about this divided by the threads that actually run in parallel.
        "cpu_ms_720p": round(statistics.fmean(cpu_720), 1) if cpu_720 else None,
        # The same photos scaled onto a 720p canvas (plates get smaller or larger).
        "exact_720p": round(exact_720 / n_plates, 4) if ms_720 else None,
        "stage_ms_native": {k: round(statistics.fmean(v), 1) for k, v in stage_ms.items()},
        "stage_ms_720p": {k: round(statistics.fmean(v), 1) for k, v in stage_720.items()},
        "misses": misses,
        # Raw counts, to pool several folders.
        "_counts": {"plates": n_plates, "exact": exact, "within": within, "det50": det50,
                    "det30": det30, "fps": fps, "images": n_images, "exact_720": exact_720,
                    "native_ms": native_ms, "ms_720": ms_720, "cpu_720": cpu_720},
    }


def pooled(results: list[dict]) -> dict:
    """Metrics over several folders' results, as if they were one set."""
    c = [r["_counts"] for r in results]
    plates = sum(x["plates"] for x in c)
    images = sum(x["images"] for x in c)
    native = [v for x in c for v in x["native_ms"]]
    ms_720 = [v for x in c for v in x["ms_720"]]
    cpu_720 = [v for x in c for v in x["cpu_720"]]
    return {
        "images": images, "plates": plates,
        "exact": round(sum(x["exact"] for x in c) / plates, 4),
        "within_one": round(sum(x["within"] for x in c) / plates, 4),
        "det_recall_50": round(sum(x["det50"] for x in c) / plates, 4),
        "det_recall_30": round(sum(x["det30"] for x in c) / plates, 4),
        "fp_per_image": round(sum(x["fps"] for x in c) / images, 4),
        "mean_ms_native": round(statistics.fmean(native), 1),
        "p95_ms_native": round(pct(native, 95), 1),
        "mean_ms_720p": round(statistics.fmean(ms_720), 1) if ms_720 else None,
        "p95_ms_720p": round(pct(ms_720, 95), 1) if ms_720 else None,
        "cpu_ms_720p": round(statistics.fmean(cpu_720), 1) if cpu_720 else None,
        "exact_720p": (round(sum(x["exact_720"] for x in c) / plates, 4) if ms_720 else None),
    }


def parse_folder(spec: str, default_region: str | None) -> tuple[Path, str]:
    """``DIR`` or ``DIR:REGION`` (a folder of one region's photos)."""
    path, _, region = spec.rpartition(":") if ":" in spec and not Path(spec).exists() \
        else (spec, "", "")
    return Path(path), region or default_region or "auto"


def run_variant(args: argparse.Namespace, settings: dict[str, object]) -> dict:
    """Evaluate one reader configuration on every folder; the summary dict."""
    folders = [parse_folder(f, args.region) for f in args.folder]
    base: dict[str, object] = {"threads": args.threads, **settings}
    if args.det_max_side and "det_max_side" not in settings:
        base["det_max_side"] = args.det_max_side
    results = []
    per_dataset: dict[str, dict] = {}
    load_s = 0.0
    shared = None
    for folder, region in folders:
        config = DetectorConfig(**base, region=region)
        reader = PlateReader(config, backend=shared)
        if shared is None:
            t_load = time.perf_counter()
            reader.load()
            load_s = time.perf_counter() - t_load
            shared = reader.backend
        reader.loaded = True
        items = load_labels(folder)
        if args.limit:
            items = items[: args.limit]
        if not items:
            raise SystemExit(f"no labelled images in {folder}")
        result = evaluate(reader, items, not args.no_720p)
        results.append(result)
        per_dataset[f"{folder.name}:{region}"] = {
            k: result[k] for k in ("images", "plates", "exact", "within_one", "fp_per_image",
                                   "det_recall_50", "exact_720p", "mean_ms_720p")}
    summary = pooled(results)
    summary.update({
        "stage_ms_native": results[0]["stage_ms_native"],
        "stage_ms_720p": results[0]["stage_ms_720p"],
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "load_s": round(load_s, 2),
        "per_dataset": per_dataset,
        "misses": [m for r in results for m in r["misses"]],
    })
    return summary


def measure_baseline(argv: list[str]) -> dict | None:
    """The baseline settings in a child process (its own models and peak RSS)."""
    proc = subprocess.run([sys.executable, __file__, *argv, "--variant", "baseline"],
                          capture_output=True, text=True, check=False)
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        print(f"baseline run failed: {proc.stderr.strip()[-500:]}", file=sys.stderr)
        return None
    return json.loads(lines[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("folder", nargs="+", help="labelled photo folder; DIR:REGION sets "
                        "the region of that folder (else --region)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--det-max-side", type=int, default=None)
    parser.add_argument("--region", default=None, help="plate region of folders without "
                        ":REGION (auto, eu, us, br; default auto)")
    parser.add_argument("--limit", type=int, default=0, help="only the first N images")
    parser.add_argument("--no-720p", action="store_true", help="skip the 1280x720 timing pass")
    parser.add_argument("--no-baseline", action="store_true",
                        help="skip the baseline run (the pre-v2 pipeline settings)")
    parser.add_argument("--variant", choices=["current", "baseline"], default="current",
                        help=argparse.SUPPRESS)
    parser.add_argument("--errors", action="store_true", help="list every miss")
    raw_argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(raw_argv)

    if args.variant == "baseline":
        summary = run_variant(args, BASELINE_SETTINGS)
        summary.pop("misses")
        print(json.dumps(summary))
        return 0
    load_before = os.getloadavg()[0]
    summary = run_variant(args, {})
    load_after = os.getloadavg()[0]
    misses = summary.pop("misses")
    baseline = None
    if not args.no_baseline:
        child = [a for a in raw_argv if a not in ("--errors",)]
        baseline = measure_baseline(child)
    summary.update({
        "threads": args.threads,
        "det_max_side": args.det_max_side or DetectorConfig().det_max_side,
        "region": ",".join(sorted({k.split(":")[1] for k in summary["per_dataset"]})),
        "cpu_count": os.cpu_count(),
        "loadavg_1m": [round(load_before, 2), round(load_after, 2)],
    })
    if baseline is not None:
        summary["baseline"] = {k: baseline.get(k) for k in (
            "exact", "within_one", "fp_per_image", "mean_ms_720p", "cpu_ms_720p",
            "exact_720p", "peak_rss_mb", "per_dataset")}
    if args.errors:
        for line in misses:
            print("MISS", line)
    print_table(summary, baseline)
    print(json.dumps(summary))
    return 0


def print_table(summary: dict, baseline: dict | None) -> None:
    def both(key: str, fmt: str = "{}") -> str:
        value = summary.get(key)
        mine = "-" if value is None else fmt.format(value)
        if baseline is None:
            return mine
        old = baseline.get(key)
        return f"{mine}   (baseline {'-' if old is None else fmt.format(old)})"

    rows = [
        ("images / plates", f"{summary['images']} / {summary['plates']}"),
        ("exact match", both("exact", "{:.1%}")),
        ("within one character", both("within_one", "{:.1%}")),
        ("detection recall IoU≥0.5", both("det_recall_50", "{:.1%}")),
        ("detection recall IoU≥0.3", both("det_recall_30", "{:.1%}")),
        ("false plates / image", both("fp_per_image", "{:.3f}")),
        ("ms native mean / p95", f"{summary['mean_ms_native']} / {summary['p95_ms_native']}"),
        ("ms 1280x720 mean", both("mean_ms_720p")),
        ("ms 1280x720 p95", both("p95_ms_720p")),
        ("exact match on the 720p canvas", both("exact_720p")),
        ("CPU ms per 720p frame (all threads)", both("cpu_ms_720p")),
        ("stage split (native, ms)", json.dumps(summary["stage_ms_native"])),
        ("stage split (720p, ms)", json.dumps(summary["stage_ms_720p"])),
        ("peak RSS MB", both("peak_rss_mb")),
        ("load average (1 min) before/after",
         f"{summary['loadavg_1m'][0]:.2f} / {summary['loadavg_1m'][1]:.2f}"),
    ]
    for name, result in summary["per_dataset"].items():
        old = (baseline or {}).get("per_dataset", {}).get(name, {})
        rows.append((f"  {name}: exact / false per image",
                     f"{result['exact']:.1%} / {result['fp_per_image']:.3f}"
                     + (f"   (baseline {old['exact']:.1%} / {old['fp_per_image']:.3f})"
                        if old else "")))
    width = max(len(r[0]) for r in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value}")


if __name__ == "__main__":
    sys.exit(main())
