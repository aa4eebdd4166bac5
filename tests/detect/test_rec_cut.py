"""The recogniser cut to the plate alphabet gives the full model's logits bit for bit."""

from __future__ import annotations

import numpy as np

from lpr_agent.detect.backends.rec_cut import cut_recogniser, full_logits_model
from lpr_agent.detect.models import model_path
from lpr_agent.detect.reader import PlateReader


def _session(model: bytes):  # -> onnxruntime.InferenceSession
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 2
    opts.log_severity_level = 3
    return ort.InferenceSession(model, sess_options=opts, providers=["CPUExecutionProvider"])


def test_cut_recogniser_matches_the_full_model_bit_for_bit() -> None:
    path = model_path("rec")
    cut = cut_recogniser(path)
    full = _session(full_logits_model(path))
    small = _session(cut.model)
    assert 36 < len(cut.keep) < 2500  # the plate alphabet and its look-alikes, not 18k
    assert cut.characters[0] == "<blank>"
    kept = set(cut.characters)
    assert set("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 -.") <= kept
    assert full.get_outputs()[0].shape[-1] > 18_000
    rng = np.random.default_rng(7)
    # Random inputs and a real-looking one (a dark plate text on white), several widths.
    for width in (96, 192, 320):
        batch = rng.uniform(-1, 1, (3, 3, 48, width)).astype(np.float32)
        batch[0] = 1.0
        batch[0, :, 12:36, 10:width - 10:7] = -1.0
        want = full.run(None, {"x": batch})[0][..., cut.keep]
        got = small.run(None, {"x": batch})[0]
        assert got.shape == want.shape
        assert np.array_equal(got, want), float(np.abs(got - want).max())


def test_backend_loads_the_cut_model(reader: PlateReader) -> None:
    backend = reader.backend
    assert getattr(backend, "cut_classes", False), "the default backend cuts the recogniser"
    assert backend._rec_logits
    assert backend._rec.get_outputs()[0].shape[-1] < 2500
