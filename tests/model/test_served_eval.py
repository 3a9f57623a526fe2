"""The served-protocol evaluation: attributes read through the server's steps as the SDK
returns them (``omniface.training.served_eval``), on generated data."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from omniface import contract  # noqa: E402
from omniface.data import load_faces  # noqa: E402
from omniface.data.synthetic import write_fixture  # noqa: E402
from omniface.training.served_eval import ServedEvaluator, centred_canvas, evaluate_served, served_markdown_table  # noqa: E402


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    from omniface.export import export_all
    from omniface.nn.model import OmniFaceNet

    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("repo")
    export_all(OmniFaceNet(width=0.25, attr_trunk="separate", attr_width=0.25).eval(), out)
    return out


@pytest.fixture(scope="module")
def faces(tmp_path_factory):
    root = write_fixture(tmp_path_factory.mktemp("data"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return {n: load_faces(n, root / n, "all") for n in ("utkface", "fer2013", "genki4k")}


def test_centred_canvas():
    img = np.full((10, 20, 3), 7, np.uint8)
    c = centred_canvas(img)
    assert c.shape == (20, 40, 3) and c[5:15, 10:30].min() == 7 and c.sum() == img.sum()


def test_analyze_faces_path_is_the_attributes_graph_on_resized_crops(repo, faces):
    """What the evaluator reports for a crop is the attributes graph's output on the
    crop resized to 112 (the SDK's analyze_faces), parsed as the SDK parses it."""
    import onnxruntime as ort
    from PIL import Image

    from omniface.processing.image import resize_crop

    rec = faces["genki4k"][0]
    with Image.open(rec.path) as im:
        rgb = np.asarray(im.convert("RGB"))
    got = ServedEvaluator(repo, threads=1).analyze_faces([rgb])[0]
    sess = ort.InferenceSession(str(repo / "attributes" / "1" / "model.onnx"), providers=["CPUExecutionProvider"])
    out = dict(zip([o.name for o in sess.get_outputs()],
                   sess.run(None, {contract.CROPS: resize_crop(rgb, contract.CROP_SIZE)[None]})))
    assert got.smile_score == pytest.approx(float(out[contract.SMILE][0, 0]), abs=1e-5)
    assert got.age == pytest.approx(float(out[contract.AGE][0, 0]), abs=1e-4)


def test_evaluate_served_reports_both_paths(repo, faces):
    res = evaluate_served(repo, {k: v[:6] for k, v in faces.items()}, threads=1)
    assert set(res) == {"utkface", "fer2013", "genki4k"}
    utk = res["utkface"]
    assert utk["analyze_faces"]["samples"] == 6 and "age_mae" in utk["analyze_faces"]
    assert 0.0 <= utk["analyze"]["found_rate"] <= 1.0 and utk["analyze"]["found"] <= 6
    assert "expression_mean_recall" in res["fer2013"]["analyze_faces"]
    assert "smile_acc" in res["genki4k"]["analyze_faces_grey"]
    table = served_markdown_table({"random init": res})
    assert table.count("\n") == 2 and "random init" in table
