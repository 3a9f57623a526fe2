"""repository.fuse_steps / serving.steps.FusedStep: consecutive ensemble steps served as
one python-backend model, with the same code, settings and graphs as the separate steps."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from omniface import contract, repository

PRE, DET, POST, ATTR = contract.PREPROCESS, contract.DETECTOR, contract.POSTPROCESS, contract.ATTRIBUTES
FORCED = {"score_threshold": "0.0", "max_faces": "3"}


@pytest.mark.parametrize("chain", [(PRE, DET, POST), (PRE, DET, POST, ATTR), (DET, POST)])
def test_fused_model_takes_and_gives_what_the_chain_does(chain) -> None:
    models = repository.variant_models(fuse=chain)
    fused = models[repository.fused_name(chain)]
    ensemble = models[contract.FACE_ANALYSIS]
    steps = [s.model_name for s in ensemble.steps]
    original = [s.model_name for s in contract.MODELS[contract.FACE_ANALYSIS].steps]
    first = original.index(chain[0])
    assert steps == original[:first] + [fused.name] + original[first + len(chain):]
    assert fused.backend == "python" and fused.max_batch_size == 0
    # Inputs: what the chain takes from outside it, the first step's first; a batched
    # model's batch axis made explicit.
    first_spec = contract.MODELS[chain[0]]
    head = fused.inputs[:len(first_spec.inputs)]
    if first_spec.max_batch_size:
        assert [(t.name, t.dims) for t in head] == [(t.name, (-1, *t.dims)) for t in first_spec.inputs]
    else:
        assert head == first_spec.inputs
    if chain[0] == DET:  # postprocess also takes the source frame and its mapping from preprocess, and its settings
        assert [t.name for t in fused.inputs[1:]] == [contract.SOURCE_IMAGE, contract.FRAME_INFO,
                                                      *(t.name for t in contract.setting_inputs(contract.POSTPROCESS))]
    # Outputs: only what later steps or the ensemble's outputs need, never the frames in between.
    names = {t.name for t in fused.outputs}
    assert contract.DETECTOR_IMAGE not in names and contract.SOURCE_IMAGE not in names
    if ATTR in chain:
        assert {t.name for t in contract.MODELS[ATTR].outputs} <= names
        assert contract.CROPS not in names
    else:
        assert contract.CROPS in names
    # Every sub-step's settings travel, prefixed; the wiring is JSON.
    plan = json.loads(fused.parameters[contract.FUSED_STEPS_PARAMETER])
    assert [s["model"] for s in plan["steps"]] == list(chain)
    if DET in chain:
        assert fused.parameters[f"{DET}.intra_op_threads"] == str(repository.ORT_THREADS[DET])
    assert repository.build_config(fused).backend == "python"
    # Fused sub-models leave the repository (no idle stubs), except the entry points;
    # the ones with a graph keep it inside the fused model's folder.
    assert set(models) == (set(contract.MODELS) - set(chain)) | set(repository.ENTRY_POINTS) & set(contract.MODELS) \
        | {fused.name}
    assert plan["embedded"] == [m for m in chain if m not in repository.ENTRY_POINTS]
    assert repository.embedded_graphs(fused) == [m for m in chain if m == DET]


def test_fusion_refuses_what_is_not_a_chain() -> None:
    with pytest.raises(ValueError, match="consecutive"):
        repository.variant_models(fuse=(PRE, POST))
    with pytest.raises(ValueError):
        repository.variant_models(fuse=(PRE,))
    with pytest.raises(ValueError):
        repository.variant_models(fuse=(PRE, "nope"))


def test_fused_postprocess_settings_follow_the_variant() -> None:
    models = repository.variant_models(postprocess=FORCED, fuse=(PRE, DET, POST, ATTR))
    fused = models[repository.fused_name((PRE, DET, POST, ATTR))]
    assert fused.parameters[f"{POST}.max_faces"] == "3"
    assert fused.parameters[f"{POST}.score_threshold"] == "0.0"


@pytest.mark.parametrize("chain", [(PRE, DET, POST), (PRE, DET, POST, ATTR)])
def test_fused_pipeline_equals_the_separate_steps(chain, astronaut, model_repository: Path) -> None:
    pytest.importorskip("onnxruntime")
    from omniface.serving.pipeline import LocalPipeline

    separate = LocalPipeline(model_repository, models=repository.variant_models(postprocess=FORCED))
    fused = LocalPipeline(model_repository, models=repository.variant_models(postprocess=FORCED, fuse=chain))
    for inputs in ({contract.IMAGE_RAW: astronaut}, {contract.IMAGE_RAW: np.zeros((0, 0, 3), np.uint8)}):
        try:
            want = separate.run(inputs)
        except Exception as exc:  # bad input: both refuse it the same way
            with pytest.raises(type(exc)):
                fused.run(inputs)
            continue
        got = fused.run(inputs)
        assert got.keys() == want.keys()
        assert int(got[contract.FACE_COUNT][0]) == 3
        for name in want:
            np.testing.assert_array_equal(got[name], want[name], err_msg=name)


def test_fused_variant_renders_and_copies_the_graphs(tmp_path: Path) -> None:
    source = tmp_path / "source"
    for graph in (DET, ATTR):
        (source / graph / "1").mkdir(parents=True)
        (source / graph / "1" / repository.ONNX_FILENAME).write_bytes(b"onnx")
    name = repository.fused_name((PRE, DET, POST, ATTR))
    out = repository.render_variant(tmp_path / "out", source, instance_counts={name: 2}, fuse=(PRE, DET, POST, ATTR))
    assert "count: 2" in (out / name / "config.pbtxt").read_text()
    assert (out / name / "1" / repository.ADAPTER_FILENAME).is_file()
    assert f'model_name: "{name}"' in (out / contract.FACE_ANALYSIS / "config.pbtxt").read_text()
    # The detector is only used inside the fused model: its folder is gone (Triton would
    # load an idle stub for it), its graph lies in the fused model's version folder.
    assert not (out / DET).exists() and not (out / PRE).exists() and not (out / POST).exists()
    assert (out / name / "1" / DET / repository.ONNX_FILENAME).read_bytes() == b"onnx"
    assert (out / ATTR / "1" / repository.ONNX_FILENAME).is_file()  # the attributes entry point stays
