"""Training and evaluation of ``OmniFaceNet`` (the ``train`` extra).

- ``config``: defaults <- TOML <- ``--set`` overrides.
- ``targets``: ATSS assignment and per-location detection targets.
- ``losses``: masked per-task losses.
- ``weighting``: fixed, uncertainty (Kendall et al.) and MT-CP task weighting.
- ``resup``: Beta-mixture label-noise weights for expressions.
- ``distribution_matching``: cross-head consistency through a relation matrix.
- ``datasets``: a config -> the training stream and the val sets.
- ``trainer``: the loop, checkpoints, exact resume, metrics CSV and plot.
- ``evaluate``: AP / NME / attribute metrics on the held-out splits, PyTorch or ONNX.

Import the submodules directly (``from omniface.training.trainer import Trainer``); this
package module imports nothing heavy.
"""
