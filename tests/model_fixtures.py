"""Tiny ONNX models with the exact inputs and outputs of the real exports, built with ``onnx.helper``.

Shared by the server tests, the integration end-to-end tests and ``bench/``: no weights, no download.

- ``clip_folder``: an immich-layout CLIP folder whose image encoder returns the image's mean colour
  (projected on orthonormal directions) and whose text encoder maps colour words to the directions
  of pure-colour images, with a real ``tokenizer.json`` (WordLevel or BPE) made by ``tokenizers``.
- ``yolo_end2end``: a ``[N, 7]`` YOLOv7 export that reports where each target colour is in its input.
- ``yolo_raw``: a ``[1, A, 85]`` YOLOv7 export that answers fixed candidates (for NMS).
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

COLOURS: dict[str, tuple[float, float, float]] = {"red": (1, 0, 0), "green": (0, 1, 0), "blue": (0, 0, 1)}
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
WORDS = ("a", "photo", "of", "the", "picture", "red", "green", "blue", "colour", "dog", "cat", "in")
WORDLEVEL_PAD = "[PAD]"
BPE_PAD = "<|endoftext|>"


def _save(graph: onnx.GraphProto, path: Path) -> Path:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def colour_directions(dim: int, seed: int = 0) -> np.ndarray:
    """``[3, dim]`` orthonormal rows: where pure red, green and blue images point."""
    q, _ = np.linalg.qr(np.random.default_rng(seed).normal(size=(dim, 3)))
    return q.T.astype(np.float32)


# --- tokenizers ------------------------------------------------------------------------


def wordlevel_tokenizer():  # -> tokenizers.Tokenizer
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers

    vocab = {WORDLEVEL_PAD: 0, "[UNK]": 1, **{w: i + 2 for i, w in enumerate(WORDS)}}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.Lowercase()
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    return tokenizer


def bpe_tokenizer():  # -> tokenizers.Tokenizer
    """CLIP-like: BPE with ``</w>`` word ends, start/end tokens around the text, padded with the end token."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers

    tokenizer = Tokenizer(models.BPE(end_of_word_suffix="</w>"))
    tokenizer.normalizer = normalizers.Lowercase()
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    trainer = trainers.BpeTrainer(
        vocab_size=120, special_tokens=["<|startoftext|>", BPE_PAD], end_of_word_suffix="</w>", show_progress=False
    )
    corpus = [" ".join(WORDS)] * 50 + ["a photo of a red dog", "the green cat", "blue colour", "reed greet"] * 5
    tokenizer.train_from_iterator(corpus, trainer)
    start, end = tokenizer.token_to_id("<|startoftext|>"), tokenizer.token_to_id(BPE_PAD)
    tokenizer.post_processor = processors.TemplateProcessing(
        single="<|startoftext|> $A <|endoftext|>", special_tokens=[("<|startoftext|>", start), (BPE_PAD, end)]
    )
    return tokenizer


# --- CLIP folder -----------------------------------------------------------------------


def clip_folder(
    root: Path,
    *,
    dim: int = 8,
    tokenizer: str = "wordlevel",
    token_dtype: type = np.int64,
    size: int = 32,
    context_length: int = 16,
    resize_mode: str = "shortest",
    text: str = "colours",
    cost: int = 0,
) -> Path:
    """Write a CLIP folder; ``text="echo"`` makes a text model that returns its token ids as floats
    (then ``dim`` must equal ``context_length``); ``cost`` adds that many 3x3 convolutions whose
    result is multiplied by zero, to give the image encoder a realistic price (benchmarks)."""
    root.mkdir(parents=True, exist_ok=True)
    directions = colour_directions(dim)
    tok = wordlevel_tokenizer() if tokenizer == "wordlevel" else bpe_tokenizer()
    pad = WORDLEVEL_PAD if tokenizer == "wordlevel" else BPE_PAD
    (root / "textual").mkdir(exist_ok=True)
    tok.save(str(root / "textual" / "tokenizer.json"))
    (root / "textual" / "tokenizer_config.json").write_text(json.dumps({"pad_token": pad}))
    (root / "config.json").write_text(json.dumps({"embed_dim": dim, "text_cfg": {"context_length": context_length}}))
    (root / "visual").mkdir(exist_ok=True)
    preprocess = {
        "size": [size, size], "mode": "RGB", "mean": CLIP_MEAN, "std": CLIP_STD,
        "interpolation": "bicubic", "resize_mode": resize_mode,
    }  # fmt: skip
    (root / "visual" / "preprocess_cfg.json").write_text(json.dumps(preprocess))
    _save(_image_graph(directions, size, cost), root / "visual" / "model.onnx")
    if text == "echo":
        assert dim == context_length, "an echo text model returns context_length values"
        graph = helper.make_graph(
            [helper.make_node("Cast", ["text"], ["embeds"], to=TensorProto.FLOAT)],
            "echo_text_encoder",
            [helper.make_tensor_value_info("text", _onnx_int(token_dtype), ["n", context_length])],
            [helper.make_tensor_value_info("embeds", TensorProto.FLOAT, ["n", dim])],
        )
    else:
        table = np.zeros((tok.get_vocab_size(), dim), np.float32)
        for colour, direction in zip(COLOURS, directions, strict=True):
            ids = tok.encode(colour, add_special_tokens=False).ids
            table[ids] += direction / len(ids)
        graph = helper.make_graph(
            [
                helper.make_node("Gather", ["table", "text"], ["per_token"], axis=0),
                helper.make_node("ReduceSum", ["per_token", "axis1"], ["embeds"], keepdims=0),
            ],
            "colour_text_encoder",
            [helper.make_tensor_value_info("text", _onnx_int(token_dtype), ["n", context_length])],
            [helper.make_tensor_value_info("embeds", TensorProto.FLOAT, ["n", dim])],
            [numpy_helper.from_array(table, "table"), numpy_helper.from_array(np.array([1], np.int64), "axis1")],
        )
    _save(graph, root / "textual" / "model.onnx")
    return root


def _onnx_int(dtype: type) -> int:
    return TensorProto.INT32 if np.dtype(dtype) == np.int32 else TensorProto.INT64


def _image_graph(directions: np.ndarray, size: int, cost: int) -> onnx.GraphProto:
    dim = directions.shape[1]
    std = np.array(CLIP_STD, np.float32).reshape(1, 3, 1, 1)
    mean = np.array(CLIP_MEAN, np.float32).reshape(1, 3, 1, 1)
    nodes = [
        helper.make_node("Mul", ["image", "std"], ["scaled"]),
        helper.make_node("Add", ["scaled", "mean"], ["rgb"]),  # undo the normalisation: RGB in [0, 1]
        helper.make_node("GlobalAveragePool", ["rgb"], ["pooled"]),
        helper.make_node("Flatten", ["pooled"], ["colour"]),
        helper.make_node("MatMul", ["colour", "directions"], ["projected"]),
    ]
    inits = [
        numpy_helper.from_array(std, "std"),
        numpy_helper.from_array(mean, "mean"),
        numpy_helper.from_array(directions, "directions"),
    ]
    last = "projected"
    if cost:
        rng = np.random.default_rng(1)
        previous, channels = "image", 3
        for i in range(cost):
            weights = rng.normal(scale=0.1, size=(32, channels, 3, 3)).astype(np.float32)
            inits.append(numpy_helper.from_array(weights, f"conv{i}"))
            nodes += [
                helper.make_node("Conv", [previous, f"conv{i}"], [f"c{i}"], pads=[1, 1, 1, 1]),
                helper.make_node("Relu", [f"c{i}"], [f"r{i}"]),
            ]
            previous, channels = f"r{i}", 32
        inits.append(numpy_helper.from_array(np.zeros((1, dim), np.float32), "zero_row"))
        nodes += [
            helper.make_node("GlobalAveragePool", [previous], ["cost_pooled"]),
            helper.make_node("Flatten", ["cost_pooled"], ["cost_flat"]),
            helper.make_node("ReduceSum", ["cost_flat", "axis1"], ["cost_sum"], keepdims=1),
            helper.make_node("Mul", ["cost_sum", "zero_row"], ["cost_zero"]),
            helper.make_node("Add", ["projected", "cost_zero"], ["with_cost"]),
        ]
        inits.append(numpy_helper.from_array(np.array([1], np.int64), "axis1"))
        last = "with_cost"
    nodes.append(helper.make_node("Identity", [last], ["embeds"]))
    return helper.make_graph(
        nodes,
        "colour_image_encoder",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["n", 3, size, size])],
        [helper.make_tensor_value_info("embeds", TensorProto.FLOAT, ["n", dim])],
        inits,
    )


# --- YOLOv7 ----------------------------------------------------------------------------


def yolo_end2end(
    path: Path,
    targets: Sequence[tuple[tuple[int, int, int], int, float]],
    *,
    height: int = 640,
    width: int = 640,
) -> Path:
    """``[N, 7]`` export: one row ``(0, x0, y0, x1, y1, class, score)`` per target colour present.

    A target is ``((r, g, b) with 0/1 channels, class id, score)``; a pixel has the colour when each
    channel is above 0.6 (for 1) or below 0.4 (for 0) after scaling to [0, 1].
    """
    nodes, inits, rows, conditions = [], [], [], []
    inits += [
        numpy_helper.from_array(np.arange(width, dtype=np.float32), "xs"),
        numpy_helper.from_array(np.arange(height, dtype=np.float32), "ys"),
        numpy_helper.from_array(np.array(1e6, np.float32), "big"),
        numpy_helper.from_array(np.array(1.0, np.float32), "one"),
        numpy_helper.from_array(np.array(0.0, np.float32), "zero"),
        numpy_helper.from_array(np.array(0.5, np.float32), "half"),
        numpy_helper.from_array(np.array([1], np.int64), "shape1"),
        numpy_helper.from_array(np.array([1, 7], np.int64), "shape17"),
    ]
    for t, (rgb, cls, score) in enumerate(targets):
        sign = np.array([1.0 if c else -1.0 for c in rgb], np.float32).reshape(1, 3, 1, 1)
        offset = np.array([-0.6 if c else 0.4 for c in rgb], np.float32).reshape(1, 3, 1, 1)
        inits += [
            numpy_helper.from_array(sign, f"sign{t}"),
            numpy_helper.from_array(offset, f"offset{t}"),
            numpy_helper.from_array(np.array([0, cls, score], np.float32)[[0]], f"batch{t}"),
            numpy_helper.from_array(np.array([cls, score], np.float32), f"tail{t}"),
        ]
        p = f"t{t}_"
        nodes += [
            helper.make_node("Mul", ["images", f"sign{t}"], [p + "signed"]),
            helper.make_node("Add", [p + "signed", f"offset{t}"], [p + "margin"]),
            helper.make_node("Greater", [p + "margin", "zero"], [p + "ok"]),
            helper.make_node("Cast", [p + "ok"], [p + "okf"], to=TensorProto.FLOAT),
            helper.make_node("ReduceMin", [p + "okf"], [p + "mask"], axes=[1], keepdims=1),  # every channel
            helper.make_node("ReduceMax", [p + "mask"], [p + "cols"], axes=[0, 1, 2], keepdims=0),
            helper.make_node("ReduceMax", [p + "mask"], [p + "rows"], axes=[0, 1, 3], keepdims=0),
        ]
        for axis, coords in (("cols", "xs"), ("rows", "ys")):
            q = p + axis
            nodes += [
                helper.make_node("Mul", [q, coords], [q + "_at"]),
                helper.make_node("Sub", ["one", q], [q + "_off"]),
                helper.make_node("Mul", [q + "_off", "big"], [q + "_far"]),
                helper.make_node("Add", [q + "_at", q + "_far"], [q + "_lo_all"]),
                helper.make_node("ReduceMin", [q + "_lo_all"], [q + "_lo0"], keepdims=1),
                helper.make_node("Add", [coords, "one"], [q + "_next"]),
                helper.make_node("Mul", [q, q + "_next"], [q + "_hi_all"]),
                helper.make_node("ReduceMax", [q + "_hi_all"], [q + "_hi0"], keepdims=1),
            ]
        nodes += [
            helper.make_node(
                "Concat",
                [f"batch{t}", p + "cols_lo0", p + "rows_lo0", p + "cols_hi0", p + "rows_hi0", f"tail{t}"],
                [p + "flat"],
                axis=0,
            ),
            helper.make_node("Reshape", [p + "flat", "shape17"], [p + "row"]),
            helper.make_node("ReduceMax", [p + "cols"], [p + "any0"], keepdims=1),
            helper.make_node("Greater", [p + "any0", "half"], [p + "present"]),
        ]
        rows.append(p + "row")
        conditions.append(p + "present")
    nodes += [
        helper.make_node("Concat", rows, ["all_rows"], axis=0),
        helper.make_node("Concat", conditions, ["present"], axis=0),
        helper.make_node("Compress", ["all_rows", "present"], ["output"], axis=0),
    ]
    graph = helper.make_graph(
        nodes,
        "yolov7_end2end_colour_finder",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, height, width])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["n", 7])],
        inits,
    )
    return _save(graph, path)


def yolo_raw(
    path: Path,
    candidates: Sequence[tuple[float, float, float, float, float, int, float]],
    *,
    height: int = 640,
    width: int = 640,
) -> Path:
    """``[1, A, 85]`` export answering fixed candidates ``(cx, cy, w, h, objectness, class, class score)``
    in the letterboxed input's pixels (every other class scores 0.01)."""
    table = np.full((1, len(candidates), 85), 0.01, np.float32)
    for i, (cx, cy, w, h, obj, cls, cls_score) in enumerate(candidates):
        table[0, i, :5] = (cx, cy, w, h, obj)
        table[0, i, 5 + cls] = cls_score
    graph = helper.make_graph(
        [
            helper.make_node("ReduceMean", ["images"], ["level"], axes=[1, 2, 3], keepdims=0),
            helper.make_node("Mul", ["level", "zero"], ["nothing"]),  # depends on the input, adds nothing
            helper.make_node("Add", ["candidates", "nothing"], ["output"]),
        ],
        "yolov7_raw_candidates",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, height, width])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, len(candidates), 85])],
        [numpy_helper.from_array(table, "candidates"), numpy_helper.from_array(np.array([0.0], np.float32), "zero")],
    )
    return _save(graph, path)


# --- a folder with no annotations, indexed with both models (the end-to-end tests) -------------

# Red marks a "person" and blue a "cat" for the colour detector; backgrounds are distinct tints, so the
# mean-colour CLIP fixture tells the scenes apart and finds each one's near-duplicates.
DETECTOR_TARGETS = (((1, 0, 0), 0, 0.9), ((0, 0, 1), 15, 0.8))
OBJECT_COLOURS = {"person": (250, 5, 5), "cat": (5, 5, 250)}
SCENES: dict[str, tuple[tuple[int, int], tuple[int, int, int], list[tuple[str, tuple[int, int, int, int]]]]] = {
    "yellow_person.png": ((640, 480), (200, 200, 60), [("person", (100, 80, 300, 400))]),
    "cyan_cat.png": ((480, 640), (60, 200, 200), [("cat", (50, 300, 400, 600))]),
    "magenta_both.png": ((800, 600), (200, 60, 200), [("person", (20, 20, 200, 300)), ("cat", (500, 100, 780, 500))]),
    "grey_empty.png": ((500, 500), (128, 128, 128), []),
}


def scene(file_name: str):  # -> PIL.Image.Image
    from PIL import Image

    size, background, objects = SCENES[file_name]
    image = Image.new("RGB", size, background)
    for name, box in objects:
        image.paste(OBJECT_COLOURS[name], box)
    return image


@dataclass(frozen=True)
class OwnModelsIndex:
    images_dir: Path
    index_dir: Path
    clip_dir: Path
    detector: Path
    output: str
    """What ``simages-server index`` printed."""


def index_with_own_models(root: Path) -> OwnModelsIndex:
    """Write the scenes (no COCO file), build both models and run ``simages-server index`` on them."""
    images_dir = root / "photos"
    images_dir.mkdir(parents=True, exist_ok=True)
    for file_name in SCENES:
        scene(file_name).save(images_dir / file_name)
    clip_dir = clip_folder(root / "ViT-fixture__colours", dim=32, size=64)
    detector = yolo_end2end(root / "yolov7-tiny-end2end.onnx", DETECTOR_TARGETS)
    index_dir = root / "photos-index"
    done = subprocess.run(
        [sys.executable, "-m", "simages_server", "index", str(images_dir), "--out", str(index_dir),
         "--clip-model", str(clip_dir), "--detector", str(detector)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return OwnModelsIndex(images_dir, index_dir, clip_dir, detector, done.stdout)
