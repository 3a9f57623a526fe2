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
    assert contract.MODELS[contract.DETECTOR].output(contract.DETECTOR_SCORES).dims == (contract.detector_locations(),)


def test_generated_adapters_are_thin_and_identical_in_logic() -> None:
    for spec in contract.MODELS.values():
        adapter = REPO_DIR / spec.name / "1" / repository.ADAPTER_FILENAME
        if repository.is_python_step(spec, "cpu"):
            text = adapter.read_text()
            assert "from omniface.serving.triton_python import TritonPythonModel" in text
            assert len(text.splitlines()) < 25
        else:
            assert not adapter.exists()
