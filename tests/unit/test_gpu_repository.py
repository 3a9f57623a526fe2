"""The GPU model repository, rendered and checked without a GPU: engine profiles from the
contract, the tensorrt_plan configs, GPU postprocess settings, and the wiring of what
`render_repository.py --target gpu` writes."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest

from omniface import contract, repository
from omniface.engines import ENGINE_MODELS, engine_profile, engine_profiles
from omniface.engines.build import gpu_models

ROOT = Path(__file__).resolve().parents[2]


def parse(text: str):
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    return text_format.Parse(text, model_config_pb2.ModelConfig())


def test_profiles_follow_the_contract() -> None:
    profiles = engine_profiles()
    assert set(profiles) == set(ENGINE_MODELS)
    (image,) = profiles[contract.DETECTOR].inputs
    assert image.name == contract.DETECTOR_IMAGE
    # Any frame from the smallest canvas to the cap, tuned for a 4:3 frame at the default det_size.
    side = (contract.DETECTOR_MIN_SIDE, contract.DETECTOR_MAX_SIDE)
    assert image.min == (1, side[0], side[0], 3) and image.max == (contract.DETECTOR_MAX_BATCH, side[1], side[1], 3)
    assert image.opt == (contract.DETECTOR_MAX_BATCH, *contract.DETECTOR_OPT_SIZE, 3)
    assert contract.DETECTOR_OPT_SIZE[1] == contract.DET_SIZE_DEFAULT
    assert all(s % contract.DETECTOR_SIZE_MULTIPLE == 0 for s in (*side, *contract.DETECTOR_OPT_SIZE))
    (crops,) = profiles[contract.ATTRIBUTES].inputs
    crop = (contract.CROP_SIZE, contract.CROP_SIZE, 3)
    assert crops.name == contract.CROPS
    assert crops.min == (1, *crop) and crops.max == (contract.ATTRIBUTES_MAX_BATCH, *crop)
    assert crops.opt == (contract.MAX_FACES_DEFAULT, *crop)  # tuned for one frame at the face cap


def test_profiles_follow_a_changed_face_cap_and_refuse_one_that_does_not_fit() -> None:
    models = dict(contract.MODELS)
    post = models[contract.POSTPROCESS]
    models[contract.POSTPROCESS] = dataclasses.replace(post, parameters={**post.parameters, "max_faces": "16"})
    assert engine_profiles(models)[contract.ATTRIBUTES].opt_batch == 16
    models[contract.POSTPROCESS] = dataclasses.replace(
        post, parameters={**post.parameters, "max_faces": str(contract.ATTRIBUTES_MAX_BATCH + 1)})
    with pytest.raises(ValueError, match="max_faces"):
        engine_profiles(models)


def test_profile_rejects_variable_dims_and_bad_opt() -> None:
    with pytest.raises(ValueError, match="does not batch"):
        engine_profile(contract.MODELS[contract.PREPROCESS])
    with pytest.raises(ValueError, match="outside"):
        engine_profile(contract.MODELS[contract.DETECTOR], opt_batch=contract.DETECTOR_MAX_BATCH + 1)
    spec = dataclasses.replace(contract.MODELS[contract.DETECTOR],
                               inputs=(contract.TensorSpec(contract.DETECTOR_IMAGE, "UINT8", (-1, -1, 3)),))
    with pytest.raises(ValueError, match="variable dims"):  # no (min, opt, max) declared for them
        engine_profile(spec)


@pytest.mark.parametrize("name", ENGINE_MODELS)
def test_engine_configs_are_tensorrt_plans_matching_the_profiles(name: str) -> None:
    config = parse(repository.render_config(contract.MODELS[name], "gpu"))
    assert config.platform == "tensorrt_plan" and not config.backend
    assert config.default_model_filename == repository.PLAN_FILENAME
    assert [g.kind for g in config.instance_group] == [config.instance_group[0].KIND_GPU]
    assert list(config.instance_group[0].profile) == ["0"]  # the engine's single profile
    assert config.HasField("dynamic_batching")
    # Triton refuses a plan whose profile does not reach max_batch_size.
    assert config.max_batch_size == engine_profiles()[name].max_batch
    assert [i.name for i in config.input] == [p.name for p in engine_profiles()[name].inputs]
    assert "onnx_file" not in config.parameters and "FORCE_CPU_ONLY_INPUT_TENSORS" not in config.parameters
    assert config.parameters[contract.CONTRACT_VERSION_PARAMETER].string_value == contract.CONTRACT_VERSION


def test_gpu_postprocess_runs_on_the_gpu_and_preprocess_on_the_host() -> None:
    post = parse(repository.render_config(contract.MODELS[contract.POSTPROCESS], "gpu"))
    assert post.backend == "python" and post.instance_group[0].kind == post.instance_group[0].KIND_GPU
    assert post.parameters["device"].string_value == "cuda"
    assert post.parameters["FORCE_CPU_ONLY_INPUT_TENSORS"].string_value == "no"
    pre = parse(repository.render_config(contract.MODELS[contract.PREPROCESS], "gpu"))
    assert pre.instance_group[0].kind == pre.instance_group[0].KIND_CPU
    assert "device" not in pre.parameters and "FORCE_CPU_ONLY_INPUT_TENSORS" not in pre.parameters


def test_cpu_postprocess_variant_of_the_gpu_repository() -> None:
    post = parse(repository.render_config(gpu_models(gpu_postprocess=False)[contract.POSTPROCESS], "gpu"))
    assert post.instance_group[0].kind == post.instance_group[0].KIND_CPU
    assert post.parameters["device"].string_value == "cpu"
    assert "FORCE_CPU_ONLY_INPUT_TENSORS" not in post.parameters


def test_cpu_target_is_untouched_by_the_gpu_settings() -> None:
    for spec in contract.MODELS.values():
        config = parse(repository.render_config(spec, "cpu"))
        assert "device" not in config.parameters and "FORCE_CPU_ONLY_INPUT_TENSORS" not in config.parameters
        assert all(g.kind == g.KIND_CPU for g in config.instance_group)


def _full(config, tensor) -> tuple[int, ...]:
    return ((-1,) if config.max_batch_size > 0 else ()) + tuple(tensor.dims)


def _compatible(a, b) -> bool:
    return len(a) == len(b) and all(x == y or -1 in (x, y) for x, y in zip(a, b))


def test_rendered_gpu_repository_is_wired(tmp_path: Path) -> None:
    """Render with the build script, parse every config back and follow the ensemble."""
    out = tmp_path / "gpu"
    done = subprocess.run([sys.executable, str(ROOT / "build" / "render_repository.py"), "--target", "gpu", "--out", str(out)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    configs = {p.parent.name: parse(p.read_text()) for p in out.glob("*/config.pbtxt")}
    assert set(configs) == set(contract.MODELS)
    for name in ENGINE_MODELS:
        assert configs[name].platform == "tensorrt_plan"
        assert not (out / name / "1" / repository.ADAPTER_FILENAME).exists()  # no python adapter for engines
    for name in (contract.PREPROCESS, contract.POSTPROCESS):
        assert (out / name / "1" / repository.ADAPTER_FILENAME).is_file()
    ensemble = configs[contract.FACE_ANALYSIS]
    assert ensemble.platform == "ensemble"
    available = {t.name: (t, ensemble) for t in ensemble.input}
    for step in ensemble.ensemble_scheduling.step:
        model = configs[step.model_name]
        inputs = {t.name: t for t in model.input}
        outputs = {t.name: t for t in model.output}
        required = {t.name for t in model.input if not t.optional}
        assert required <= set(step.input_map), step.model_name
        for model_tensor, scope_tensor in step.input_map.items():
            assert scope_tensor in available, f"{step.model_name}.{model_tensor} reads unproduced {scope_tensor!r}"
            produced, producer = available[scope_tensor]
            consumer = inputs[model_tensor]
            assert produced.data_type == consumer.data_type, (step.model_name, model_tensor)
            if producer is not ensemble:
                assert _compatible(_full(producer, produced), _full(model, consumer)), (step.model_name, model_tensor)
        for model_tensor, scope_tensor in step.output_map.items():
            available[scope_tensor] = (outputs[model_tensor], model)
    for output in ensemble.output:
        produced, producer = available[output.name]
        assert produced.data_type == output.data_type
        assert _compatible(_full(producer, produced), tuple(output.dims)), output.name
    # the committed CPU repository is still what the contract renders
    assert repository.check_repository(ROOT / "model_repository") == []
