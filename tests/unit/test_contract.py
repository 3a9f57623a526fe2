"""The contract is the one source of truth: the committed repository, the ensemble
wiring and the model specs must agree with it."""

from __future__ import annotations

from pathlib import Path

import pytest

from omniface import contract, repository

REPO_DIR = Path(__file__).resolve().parents[2] / "model_repository"


def full_shape(spec: contract.ModelSpec, tensor: contract.TensorSpec) -> tuple[int, ...]:
    """The shape a request carries: batching models prepend the batch axis."""
    return ((-1,) if spec.max_batch_size > 0 else ()) + tensor.dims


def shapes_compatible(a: tuple[int, ...], b: tuple[int, ...]) -> bool:
    return len(a) == len(b) and all(x == y or -1 in (x, y) for x, y in zip(a, b))


def test_committed_repository_matches_contract() -> None:
    drifted = repository.check_repository(REPO_DIR)
    assert drifted == [], "re-render with `python build/render_repository.py`:\n" + "\n".join(drifted)


def test_drift_is_detected(tmp_path: Path) -> None:
    repository.render_repository(tmp_path)
    config = tmp_path / contract.POSTPROCESS / "config.pbtxt"
    config.write_text(config.read_text().replace('"0.4"', '"0.5"'))
    assert repository.check_repository(tmp_path) == [f"{contract.POSTPROCESS}/config.pbtxt: differs from the contract's rendering"]


@pytest.mark.parametrize("target", ["cpu", "gpu"])
def test_ensemble_wiring_connects(target: str) -> None:
    models = contract.MODELS
    ensemble = models[contract.FACE_ANALYSIS]
    available = {t.name: (t, ensemble) for t in ensemble.inputs}
    consumed: set[str] = set()
    for step in ensemble.steps:
        model = models[step.model_name]
        assert set(step.input_map) <= {t.name for t in model.inputs}, step.model_name
        required = {t.name for t in model.inputs if not t.optional}
        assert required <= set(step.input_map), f"{step.model_name} misses inputs {required - set(step.input_map)}"
        for model_tensor, ensemble_tensor in step.input_map.items():
            assert ensemble_tensor in available, f"{step.model_name}.{model_tensor} reads {ensemble_tensor!r}, which nothing produced"
            producer_tensor, producer = available[ensemble_tensor]
            consumer_tensor = model.input(model_tensor)
            assert producer_tensor.dtype == consumer_tensor.dtype, (step.model_name, model_tensor)
            if producer is not ensemble:
                assert shapes_compatible(full_shape(producer, producer_tensor), full_shape(model, consumer_tensor)), (
                    f"{producer.name}.{producer_tensor.name} {full_shape(producer, producer_tensor)} -> "
                    f"{model.name}.{model_tensor} {full_shape(model, consumer_tensor)}"
                )
            consumed.add(ensemble_tensor)
        assert set(step.output_map) <= {t.name for t in model.outputs}, step.model_name
        for model_tensor, ensemble_tensor in step.output_map.items():
            available[ensemble_tensor] = (model.output(model_tensor), model)
    for output in ensemble.outputs:
        assert output.name in available, f"ensemble output {output.name!r} is produced by no step"
        produced, producer = available[output.name]
        assert produced.dtype == output.dtype
        assert shapes_compatible(full_shape(producer, produced), output.dims), output.name
    unused = set(available) - consumed - {o.name for o in ensemble.outputs} - {t.name for t in ensemble.inputs}
    assert not unused, f"tensors produced but never used: {unused}"
    # rendering for the target must succeed and keep the wiring
    text = repository.render_config(ensemble, target)
    assert all(f'model_name: "{s.model_name}"' in text for s in ensemble.steps)


def test_gpu_target_uses_tensorrt_for_graphs() -> None:
    for name in (contract.DETECTOR, contract.ATTRIBUTES):
        text = repository.render_config(contract.MODELS[name], "gpu")
        assert 'platform: "tensorrt_plan"' in text and "KIND_GPU" in text and "dynamic_batching" in text
    assert 'backend: "python"' in repository.render_config(contract.MODELS[contract.PREPROCESS], "gpu")


def test_every_model_publishes_contract_version() -> None:
    for spec in contract.MODELS.values():
        assert spec.parameters[contract.CONTRACT_VERSION_PARAMETER] == contract.CONTRACT_VERSION


def test_attribute_outputs_follow_tasks() -> None:
    names = [t.name for t in contract.attribute_outputs(("age", "smile"))]
    assert names == ["age", "age_std", "smile"]
    full = contract.build_models(tasks=tuple(t.name for t in contract.TASKS))
    assert {"glasses", "action_units"} <= {t.name for t in full[contract.ATTRIBUTES].outputs}
    with pytest.raises(KeyError):
        contract.attribute_outputs(("telepathy",))


def test_detector_locations_match_strides() -> None:
    assert contract.detector_locations() == 80 * 60 + 40 * 30 + 20 * 15
    assert contract.detector_locations(32, 32) == 16 + 4 + 1
    # The detector takes any size: its location axis follows the input.
    assert contract.MODELS[contract.DETECTOR].input(contract.DETECTOR_IMAGE).dims == (-1, -1, 3)
    assert contract.MODELS[contract.DETECTOR].output(contract.DETECTOR_SCORES).dims == (-1,)
    assert contract.DETECTOR_MIN_SIDE % contract.DETECTOR_SIZE_MULTIPLE == 0
    assert contract.DETECTOR_MAX_SIDE % contract.DETECTOR_SIZE_MULTIPLE == 0


def test_generated_adapters_are_thin_and_identical_in_logic() -> None:
    for spec in contract.MODELS.values():
        adapter = REPO_DIR / spec.name / "1" / repository.ADAPTER_FILENAME
        if repository.is_python_step(spec, "cpu"):
            text = adapter.read_text()
            assert "from omniface.serving.triton_python import TritonPythonModel" in text
            assert len(text.splitlines()) < 25
        else:
            assert not adapter.exists()


def test_every_setting_is_an_optional_ensemble_input_wired_to_its_step() -> None:
    """The per-request settings are declared once (DETECTION_SETTINGS); the ensemble's
    inputs, the step that takes each one, its config default and the SDK derive from it."""
    models = contract.MODELS
    ensemble = models[contract.FACE_ANALYSIS]
    frame_inputs = {contract.IMAGE_BYTES, contract.IMAGE_RAW}
    assert [t.name for t in ensemble.inputs if t.name not in frame_inputs] == [s.name for s in contract.DETECTION_SETTINGS]
    for setting in contract.DETECTION_SETTINGS:
        assert ensemble.input(setting.name) == setting.tensor
        assert setting.tensor.optional and setting.tensor.dims == (1,)
        (step,) = [s for s in ensemble.steps if setting.name in s.input_map.values()]
        assert step.model_name == setting.step and step.input_map[setting.name] == setting.name
        owner = models[setting.step]
        assert owner.input(setting.name) == setting.tensor
        default = owner.parameters[setting.name]  # the server's default is the step's config value
        value = contract.DET_SIZE_NATIVE if default == contract.DET_SIZE_NATIVE_NAME else float(default)
        assert setting.problem(value) is None, (setting.name, default)
    # ... and what is rendered carries them: the committed configs match this rendering.
    config = (REPO_DIR / contract.FACE_ANALYSIS / "config.pbtxt").read_text()
    for setting in contract.DETECTION_SETTINGS:
        assert f'name: "{setting.name}"' in config


def test_a_drifted_setting_is_caught(tmp_path: Path) -> None:
    repository.render_repository(tmp_path)
    config = tmp_path / contract.FACE_ANALYSIS / "config.pbtxt"
    config.write_text(config.read_text().replace('name: "max_faces"', 'name: "max_face"'))
    assert repository.check_repository(tmp_path) == [
        f"{contract.FACE_ANALYSIS}/config.pbtxt: differs from the contract's rendering"]


def test_setting_ranges() -> None:
    by_name = contract.SETTINGS_BY_NAME
    assert by_name[contract.MAX_FACES].maximum == contract.ATTRIBUTES_MAX_BATCH
    assert by_name[contract.SCORE_THRESHOLD].problem(0.0) is None and by_name[contract.SCORE_THRESHOLD].problem(1.0) is None
    assert "between 0 and 1" in by_name[contract.SCORE_THRESHOLD].problem(1.5)
    assert by_name[contract.DET_SIZE].problem(contract.DET_SIZE_NATIVE) is None
    assert by_name[contract.DET_SIZE].problem(contract.DETECTOR_MAX_SIDE + 1)
    assert "integer" in by_name[contract.MAX_FACES].problem(2.5)
    assert by_name[contract.MIN_FACE_SIZE].problem(1e6) is None and "finite" in by_name[contract.MIN_FACE_SIZE].problem(float("nan"))


def test_rendering_refuses_a_face_cap_the_attributes_model_cannot_take(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="max_faces=256 exceeds the attributes model's max_batch_size 128"):
        repository.render_variant(tmp_path / "a", postprocess={"max_faces": 256})
    with pytest.raises(ValueError, match="max_batch_size"):  # fused, the same check
        repository.render_variant(tmp_path / "b", postprocess={"max_faces": 129}, fuse=repository.CPU_FUSED_CHAIN)
    with pytest.raises(ValueError, match="score_threshold"):
        repository.render_variant(tmp_path / "c", postprocess={"score_threshold": 1.5})
    with pytest.raises(ValueError, match="det_size"):
        repository.render_repository(tmp_path / "d", models=_with_preprocess(det_size="tiny"))
    assert not (tmp_path / "a").exists()  # refused before anything is written
    repository.render_variant(tmp_path / "ok", postprocess={"max_faces": 128})  # the limit itself is fine


def _with_preprocess(**parameters: str) -> dict[str, contract.ModelSpec]:
    import dataclasses

    models = dict(contract.MODELS)
    pre = models[contract.PREPROCESS]
    models[contract.PREPROCESS] = dataclasses.replace(pre, parameters={**pre.parameters, **parameters})
    return models
