"""repository.variant_models / render_variant: the repositories benchmarks serve."""

from __future__ import annotations

from pathlib import Path

import pytest

from omniface import contract, repository


def test_no_changes_is_the_contract() -> None:
    assert repository.variant_models() == contract.MODELS


def test_postprocess_delays_sizes_and_threads() -> None:
    models = repository.variant_models(
        postprocess={"score_threshold": "0.0", "max_faces": 20},
        max_queue_delay_us={contract.DETECTOR: 2000},
        preferred_batch_sizes={contract.DETECTOR: [2, 4]},
        ort_threads={contract.ATTRIBUTES: 2},
    )
    assert models[contract.POSTPROCESS].parameters["max_faces"] == "20"
    assert models[contract.POSTPROCESS].parameters["nms_iou"] == str(contract.NMS_IOU_DEFAULT)
    config = repository.build_config(models[contract.DETECTOR])
    assert config.dynamic_batching.max_queue_delay_microseconds == 2000
    assert list(config.dynamic_batching.preferred_batch_size) == [2, 4]
    attributes = repository.build_config(models[contract.ATTRIBUTES])
    assert attributes.parameters["intra_op_threads"].string_value == "2"
    default = repository.build_config(contract.MODELS[contract.ATTRIBUTES])
    assert default.parameters["intra_op_threads"].string_value == str(repository.ORT_THREADS[contract.ATTRIBUTES])
    assert contract.MODELS[contract.POSTPROCESS].parameters["max_faces"] == str(contract.MAX_FACES_DEFAULT)


def test_bad_changes_are_refused() -> None:
    with pytest.raises(ValueError):
        repository.variant_models(max_queue_delay_us={contract.PREPROCESS: 100})
    with pytest.raises(ValueError):
        repository.variant_models(ort_threads={contract.POSTPROCESS: 2})
    with pytest.raises(ValueError):
        repository.variant_models(ort_threads={contract.DETECTOR: 0})
    with pytest.raises(KeyError):
        repository.variant_models(required_input="IMAGE_YUV")


@pytest.mark.parametrize("name", [contract.IMAGE_RAW, contract.IMAGE_BYTES])
def test_required_input_ensemble(name: str) -> None:
    ensemble = repository.variant_models(required_input=name)[contract.FACE_ANALYSIS]
    assert [(t.name, t.optional) for t in ensemble.inputs] == [(name, False)]
    assert ensemble.steps[0].input_map == {name: name}
    # Every tensor a step reads is the one input or made by an earlier step: the optional
    # settings are not wired any more (Triton refuses an ensemble with a dangling input).
    available = {name}
    for step in ensemble.steps:
        assert set(step.input_map.values()) <= available, step.model_name
        available |= set(step.output_map.values())
    post = next(s for s in ensemble.steps if s.model_name == contract.POSTPROCESS)
    assert not set(post.input_map) & set(contract.SETTINGS_BY_NAME)


def test_render_variant_copies_the_graphs(tmp_path: Path) -> None:
    source = tmp_path / "source"
    for graph in (contract.DETECTOR, contract.ATTRIBUTES):
        (source / graph / "1").mkdir(parents=True)
        (source / graph / "1" / repository.ONNX_FILENAME).write_bytes(b"onnx:" + graph.encode())
    out = repository.render_variant(tmp_path / "out", source, instance_counts={contract.PREPROCESS: 2},
                                    postprocess={"max_faces": "3"})
    assert (out / contract.DETECTOR / "1" / repository.ONNX_FILENAME).read_bytes() == b"onnx:detector"
    assert "count: 2" in (out / contract.PREPROCESS / "config.pbtxt").read_text()
    assert '"3"' in (out / contract.POSTPROCESS / "config.pbtxt").read_text()
    with pytest.raises(FileNotFoundError):
        repository.render_variant(tmp_path / "out2", tmp_path / "empty")


def test_presets_spell_out_the_detector_settings() -> None:
    from omniface.bench.experiments import PRESET_GROUPS, PRESETS, expand_presets

    for name in (n for key, group in PRESET_GROUPS.items() if key != "fusion" for n in group):
        assert contract.DETECTOR in PRESETS[name].instance_counts, name
        assert contract.DETECTOR in PRESETS[name].ort_threads, name
    assert [v.name for v in expand_presets(["det1-ort2", "stage2"])][:2] == ["det1-ort2", "det1-ort1"]
    with pytest.raises(KeyError):
        expand_presets(["nope"])
    assert "detector x2 ort1" in PRESETS["det2-ort1"].describe()


def test_fused_presets_spell_out_the_fused_instances() -> None:
    from omniface.bench.experiments import PRESET_GROUPS, PRESETS

    for name in PRESET_GROUPS["fusion"]:
        variant = PRESETS[name]
        if variant.fuse:
            assert variant.instance_counts == {repository.fused_name(variant.fuse): int(name.rsplit("x", 1)[1])}
            assert "fused x" in variant.describe()
