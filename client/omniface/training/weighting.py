"""How the per-task losses become one training loss.

Task units are the attribute tasks plus three detection terms (``det_score``,
``det_box``, ``det_landmarks``). A task is *present* in a step when the batch carries a
label for it; absent tasks get no term at all, so their parameters (head weights, and
here their log-variance) receive no gradient.

* ``fixed``: ``sum_t w_t L_t`` with configured weights (default 1).
* ``uncertainty`` (Kendall, Gal & Cipolla, CVPR 2018; revisited in arXiv 2403.00561):
  one learnable ``s_t = log sigma_t^2`` per task,
  ``total = sum_{t present} c_t exp(-s_t) L_t + 0.5 s_t`` with ``c_t = 0.5`` for
  regression terms (box, landmarks, head pose) and ``c_t = 1`` for classification terms
  (scores, CORAL age, gender, expression, smile, glasses, AUs). The ``s_t`` live in their
  own optimiser group without weight decay.
* ``mtcp``: the dynamic task prioritisation of MT-CP (Fontana, Spratling & Shi, WACV
  2025; github.com/Klodivio355/MT-CP ``losses/loss_schemes.py``). Losses are projected to
  a common scale, ``l_t = log(1 + L_t)``, and weighted by their relative change against
  the total's, so a task that decreases more slowly than the whole gets more weight:

      total(p)  = sum_t w_t(p) * l_t                           (w_t detached)
      r_t(p)    = lbar_t(p) / lbar_t(p-1)                      task's change
      R(p)      = sum_t w_t(p) lbar_t(p) / sum_t w_t(p-1) lbar_t(p-1)   the total's change
      w_t(p+1)  = clamp(r_t(p) / R(p), w_min, w_max)

  ``p`` counts periods of ``period`` steps (``period = 1`` is the reference code's per-step
  rule) and ``lbar_t(p)`` is the mean of ``l_t`` over the steps of period ``p`` where task t
  was present; both sums in ``R`` run over the tasks seen in both periods. Weights start
  at 1 (the reference also rescales step 1 by total / l_t; that rescaling is gone one step
  later, so it is left out). The clamp (default [0.1, 10]) guards against a near-zero
  previous loss.
"""

from __future__ import annotations

import math

from omniface.errors import require

torch = require("torch", "train")
nn = torch.nn

REGRESSION_TASKS = frozenset({"det_box", "det_landmarks", "head_pose"})
TASK_UNITS = ("det_score", "det_box", "det_landmarks", "age", "gender", "expression", "smile", "head_pose",
              "glasses", "action_units")


class FixedWeighting(nn.Module):
    def __init__(self, tasks, weights: dict | None = None):
        super().__init__()
        self.tasks = tuple(tasks)
        self.w = {t: float((weights or {}).get(t, 1.0)) for t in self.tasks}

    def forward(self, losses: dict, present) -> torch.Tensor:
        terms = [self.w[t] * losses[t] for t in self.tasks if t in present and t in losses]
        return torch.stack(terms).sum() if terms else None

    def weights(self) -> dict:
        return dict(self.w)

    def end_step(self):
        pass


class UncertaintyWeighting(nn.Module):
    """Learned homoscedastic-uncertainty weights; ``log_vars[t]`` is s_t.

    ``init="auto"`` starts each s_t, the first time its task is present, at the
    stationary point of its term, ``s* = log(2 c_t L_t)`` (where d total / d s_t = 0),
    clamped to [-4, 8]: the first steps then weight the tasks by ``1 / (2 L_t)``, on a
    common scale, instead of by raw loss magnitudes that differ by 100x here (CORAL sums
    99 rank BCEs, head pose is in degrees) and would let two tasks own the trunk until
    the s_t catch up. A number starts every s_t there (Kendall et al. use 0)."""

    def __init__(self, tasks, init: float | str = 0.0, regression=REGRESSION_TASKS):
        super().__init__()
        self.tasks = tuple(tasks)
        self.regression = frozenset(regression)
        self.auto = init == "auto"
        start = 0.0 if self.auto else float(init)
        self.log_vars = nn.ParameterDict({t: nn.Parameter(torch.tensor(start)) for t in self.tasks})
        self.register_buffer("initialised", torch.tensor([not self.auto] * len(self.tasks)))

    def coefficient(self, task: str) -> float:
        return 0.5 if task in self.regression else 1.0

    def forward(self, losses: dict, present) -> torch.Tensor:
        terms = []
        for i, t in enumerate(self.tasks):
            if t in present and t in losses:
                s = self.log_vars[t]
                if not bool(self.initialised[i]):
                    with torch.no_grad():
                        value = float(losses[t].detach())
                        s.fill_(min(8.0, max(-4.0, math.log(max(2 * self.coefficient(t) * value, 1e-12)))))
                        self.initialised[i] = True
                terms.append(self.coefficient(t) * torch.exp(-s) * losses[t] + 0.5 * s)
        return torch.stack(terms).sum() if terms else None

    def weights(self) -> dict:
        """Effective multipliers ``c_t exp(-s_t)`` (for logging)."""
        return {t: self.coefficient(t) * math.exp(-float(self.log_vars[t].detach())) for t in self.tasks}

    def log_variances(self) -> dict:
        return {t: float(self.log_vars[t].detach()) for t in self.tasks}

    def end_step(self):
        pass


class MTCPWeighting(nn.Module):
    """MT-CP dynamic task prioritisation (see the module docstring for the formula)."""

    def __init__(self, tasks, period: int = 1, w_min: float = 0.1, w_max: float = 10.0):
        super().__init__()
        self.tasks = tuple(tasks)
        self.period = max(1, int(period))
        self.w_min, self.w_max = float(w_min), float(w_max)
        self.w = {t: 1.0 for t in self.tasks}
        self.prev = {}      # task -> (mean projection of the last finished period, the weight used then)
        self.acc = {t: [0.0, 0] for t in self.tasks}
        self.steps = 0

    def forward(self, losses: dict, present) -> torch.Tensor:
        terms = []
        for t in self.tasks:
            if t in present and t in losses:
                proj = torch.log1p(losses[t])
                terms.append(self.w[t] * proj)
                self.acc[t][0] += float(proj.detach())
                self.acc[t][1] += 1
        return torch.stack(terms).sum() if terms else None

    def end_step(self):
        """Close a step; at the end of a period, update the weights."""
        self.steps += 1
        if self.steps % self.period:
            return
        mean = {t: s / n for t, (s, n) in self.acc.items() if n > 0}
        both = [t for t in mean if t in self.prev]
        if both:
            now = sum(self.w[t] * mean[t] for t in both)
            before = sum(self.prev[t][1] * self.prev[t][0] for t in both)
            ratio_total = now / before if before > 0 else 1.0
            new_w = dict(self.w)
            for t in both:
                r = mean[t] / self.prev[t][0] if self.prev[t][0] > 0 else 1.0
                new_w[t] = min(self.w_max, max(self.w_min, r / ratio_total if ratio_total > 0 else 1.0))
        else:
            new_w = dict(self.w)
        for t, m in mean.items():
            self.prev[t] = (m, self.w[t])
        self.w = new_w
        self.acc = {t: [0.0, 0] for t in self.tasks}

    def weights(self) -> dict:
        return dict(self.w)

    def get_extra_state(self):
        return {"w": dict(self.w), "prev": {k: list(v) for k, v in self.prev.items()},
                "acc": {k: list(v) for k, v in self.acc.items()}, "steps": self.steps}

    def set_extra_state(self, state):
        self.w = dict(state["w"])
        self.prev = {k: tuple(v) for k, v in state["prev"].items()}
        self.acc = {k: list(v) for k, v in state["acc"].items()}
        self.steps = int(state["steps"])


def build_weighting(method: str, tasks, cfg: dict | None = None) -> nn.Module:
    cfg = cfg or {}
    if method == "uncertainty":
        return UncertaintyWeighting(tasks, init=cfg.get("init_log_var", 0.0))
    if method == "mtcp":
        return MTCPWeighting(tasks, cfg.get("mtcp_period", 1), *cfg.get("mtcp_clamp", (0.1, 10.0)))
    if method == "fixed":
        return FixedWeighting(tasks, cfg.get("fixed", {}))
    raise ValueError(f"weighting.method must be 'uncertainty', 'mtcp' or 'fixed', got {method!r}")
