"""The whole pipeline in one process: the same steps, graphs and settings the server runs.

This is the baseline the served pipeline is measured against (the overhead budget) and a
way to test pre/post-processing end to end without a server. Settings come from the
contract exactly as ``omniface.repository`` renders them into config.pbtxt.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from omniface import contract, repository
from omniface.serving.steps import Step, Tensors, make_step, run_wired


class LocalPipeline:
    """preprocess -> detector -> postprocess -> attributes, wired as the ensemble is."""

    def __init__(
        self,
        repo_dir: Path | None = None,
        models: Mapping[str, contract.ModelSpec] | None = None,
        threads: Mapping[str, int] | None = None,
    ) -> None:
        self.models = dict(contract.MODELS if models is None else models)
        repo_dir = Path(repo_dir) if repo_dir else repository.default_repository_path()
        self.ensemble = self.models[contract.FACE_ANALYSIS]
        self.steps: dict[str, Step] = {}
        for step in self.ensemble.steps:
            parameters = repository.model_parameters(self.models[step.model_name], "cpu")
            if threads and step.model_name in threads:
                parameters["intra_op_threads"] = str(threads[step.model_name])
            self.steps[step.model_name] = make_step(step.model_name, parameters, repo_dir / step.model_name / "1")

    def run(self, inputs: Mapping[str, np.ndarray]) -> Tensors:
        """Ensemble inputs in, ensemble outputs out (same names, shapes and dtypes)."""
        scope = run_wired(self.steps, self.ensemble.steps, inputs)
        return {t.name: scope[t.name] for t in self.ensemble.outputs}

    def run_attributes(self, crops: np.ndarray) -> Tensors:
        """The attributes-only entry point on aligned UINT8 crops [N, 112, 112, 3]."""
        return self.steps[contract.ATTRIBUTES]({contract.CROPS: crops})
