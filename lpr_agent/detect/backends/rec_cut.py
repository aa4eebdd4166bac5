"""Cut the recogniser's output layer down to the characters a plate can show.

PP-OCR's recogniser ends in ``MatMul(120 → 18 710) + Add(bias) + Softmax``:
one class per character of a Chinese/Latin/symbol dictionary. A plate needs
blank, A–Z/0–9 and something to stand for "a separator". Keeping only the
classes of Latin-looking characters (~1.9k: :data:`LOOKALIKE_BLOCKS`) makes
that last matrix product and the output tensor (batch × time × classes)
~10× smaller; for a batch of 8 crops the full output was ~24 MB of floats
and about 0.7 G multiply-adds.

The edit only *selects* columns of the weight and bias: each kept logit is
computed by the same dot product as in the full model, so the logits are
bit-for-bit those of the full model (``tests/detect/test_rec_cut.py``).
The softmax is left to the caller, over the kept classes: the mass of the
dropped classes (CJK and other scripts, which no plate glyph resembles) is
spread over the kept ones; on the EU set every read stayed the same.

The model still comes from the pinned wheel: the edit happens in memory at
load time, nothing is written or downloaded.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CutModel:
    model: bytes  # serialised ONNX, outputs logits of the kept classes
    keep: list[int]  # indices of the full model's classes, in output order
    characters: list[str]  # the kept classes' characters ("<blank>" first)


def dictionary(characters_meta: str) -> list[str]:
    """Class characters of a PP-OCR recogniser: blank, the dictionary lines, space."""
    return ["<blank>", *characters_meta.split("\n"), " "]


# Unicode blocks whose glyphs can look like a plate's letters, digits or
# separators: Latin (with accents), Greek, Cyrillic, general punctuation and
# symbols (arrows, circles, enclosed forms), CJK punctuation (〇) and the
# fullwidth forms. A plate position the full model gives to one of these
# must stay "not a plate character"; dropping them (ASCII only) made
# ``LM010BE`` read ``LMOO10BE``. CJK ideographs, Hangul, kana… are left out.
LOOKALIKE_BLOCKS = ((0x0020, 0x0530), (0x2000, 0x2C00), (0x3000, 0x3040), (0xFF00, 0xFFEF))


def plate_classes(characters: list[str]) -> list[int]:
    """Blank plus every class whose character is in :data:`LOOKALIKE_BLOCKS`."""
    return [0] + [i for i, ch in enumerate(characters)
                  if i > 0 and len(ch) == 1
                  and any(lo <= ord(ch) < hi for lo, hi in LOOKALIKE_BLOCKS)]


def _load(path: Path):  # -> onnx.ModelProto
    import onnx

    return onnx.load(str(path))


def _final_layer(model):  # -> (softmax node, add node, matmul node)
    graph = model.graph
    producers = {out: node for node in graph.node for out in node.output}
    softmax = producers.get(graph.output[0].name)
    if softmax is None or softmax.op_type != "Softmax":
        raise ValueError("recogniser does not end in a Softmax")
    node = producers[softmax.input[0]]
    while node.op_type == "Identity":
        node = producers[node.input[0]]
    add = node
    matmul = producers.get(add.input[0]) if add.op_type == "Add" else None
    if matmul is None or matmul.op_type != "MatMul":
        raise ValueError("recogniser's last layer is not MatMul + Add")
    return softmax, add, matmul


def logits_model(model) -> None:
    """Make ``model`` output the logits (the Softmax's input) instead of probabilities."""
    softmax, _add, _matmul = _final_layer(model)
    graph = model.graph
    graph.node.remove(softmax)
    graph.output[0].name = softmax.input[0]


def cut_recogniser(path: Path, keep: list[int] | None = None) -> CutModel:
    """The recogniser at ``path`` with only the ``keep`` output classes, emitting logits."""
    from onnx import numpy_helper

    model = _load(path)
    meta = {p.key: p.value for p in model.metadata_props}
    characters = dictionary(meta["character"])
    keep = plate_classes(characters) if keep is None else keep
    _softmax, add, matmul = _final_layer(model)
    inits = {init.name: init for init in model.graph.initializer}
    weight, bias = inits[matmul.input[1]], inits[add.input[1]]
    w = numpy_helper.to_array(weight)
    b = numpy_helper.to_array(bias)
    if w.shape[-1] != len(characters) or b.shape[-1] != len(characters):
        raise ValueError(f"last layer has {w.shape[-1]} classes, dictionary {len(characters)}")
    idx = np.asarray(keep, dtype=np.int64)
    weight.CopyFrom(numpy_helper.from_array(np.ascontiguousarray(w[:, idx]), weight.name))
    bias.CopyFrom(numpy_helper.from_array(np.ascontiguousarray(b[idx]), bias.name))
    logits_model(model)
    out_dims = model.graph.output[0].type.tensor_type.shape.dim
    if out_dims:
        out_dims[-1].Clear()
        out_dims[-1].dim_value = len(keep)
    # The value_info of the old logits tensor (if any) still says 18 710 classes.
    for info in list(model.graph.value_info):
        if info.name in (matmul.output[0], add.output[0], model.graph.output[0].name):
            model.graph.value_info.remove(info)
    kept_chars = [characters[i] for i in keep]
    log.debug("recogniser cut from %d to %d classes", len(characters), len(keep))
    return CutModel(model.SerializeToString(), list(keep), kept_chars)


def full_logits_model(path: Path) -> bytes:
    """The uncut recogniser emitting logits: the reference the cut model is checked against."""
    model = _load(path)
    logits_model(model)
    for info in list(model.graph.value_info):
        if info.name == model.graph.output[0].name:
            model.graph.value_info.remove(info)
    return model.SerializeToString()
