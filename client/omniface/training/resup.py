"""ReSup-style label-noise suppression for expressions (after Zhang et al., "ReSup:
Reliable Label Noise Suppression for Facial Expression Recognition", arXiv 2305.17895).

Per sample, a similarity between the predicted distribution ``p`` and the one-hot label:
``sim = 1 - 0.5 * ||p - onehot(y)||_1``, which equals ``p_y``, the predicted probability
of the labelled class (the L1 distance is (1 - p_y) + sum_{j != y} p_j = 2 (1 - p_y)).
Clean labels are learnt early and get high similarity; noisy ones stay low.

At each new epoch of the expression data (when the training stream's walk over it
starts a new pass, after ``warmup_steps``) a two-component Beta mixture is fitted by EM to the latest similarity of every sample
seen; the component with the higher mean is "clean". A sample's loss weight is the
posterior probability of the clean component at its current similarity (detached),
``w = pi_c Beta(s; a_c, b_c) / sum_k pi_k Beta(s; a_k, b_k)``. Before the first fit
(warm-up) every weight is 1.

This is the sample-reweighting core as omniface specifies it (similarity, Beta mixture,
clean posterior as weight); the paper's full scheme has more parts and is not
reproduced here.

EM: E-step responsibilities from the Beta densities; M-step by weighted moments
(mean m, variance v -> a = m (m(1-m)/v - 1), b = (1-m)(m(1-m)/v - 1)), as in Arazo et
al., "Unsupervised label noise modeling and loss correction" (ICML 2019); started
from a split at the median, iterated until the mean log-likelihood changes by < 1e-6
(at most ``em_iters``, default 100). Similarities are clipped to [1e-4, 1 - 1e-4];
weights are floored at ``min_weight`` so no sample is dropped entirely.
"""

from __future__ import annotations

import numpy as np
from scipy.special import betaln

EPS = 1e-4


def similarity(probs, labels):
    """``1 - 0.5 * L1(p, onehot(y))`` per sample (= p_y); numpy or torch ``[N, C]``."""
    one_hot = np.zeros_like(probs)
    one_hot[np.arange(len(labels)), labels] = 1.0
    return 1.0 - 0.5 * np.abs(probs - one_hot).sum(1)


def _log_beta_pdf(x, a, b):
    return (a - 1) * np.log(x) + (b - 1) * np.log1p(-x) - betaln(a, b)


class BetaMixture:
    """Two-component Beta mixture on (0, 1)."""

    def __init__(self, alphas=(2.0, 4.0), betas=(4.0, 2.0), weights=(0.5, 0.5)):
        self.alphas = np.asarray(alphas, np.float64)
        self.betas = np.asarray(betas, np.float64)
        self.weights = np.asarray(weights, np.float64)

    def _log_joint(self, x):
        x = np.clip(np.asarray(x, np.float64), EPS, 1 - EPS)
        return np.stack([np.log(self.weights[k] + 1e-12) + _log_beta_pdf(x, self.alphas[k], self.betas[k]) for k in range(2)])

    def responsibilities(self, x):
        lj = self._log_joint(x)
        lj -= lj.max(0, keepdims=True)
        r = np.exp(lj)
        return r / r.sum(0, keepdims=True)

    def log_likelihood(self, x) -> float:
        lj = self._log_joint(x)
        m = lj.max(0)
        return float((m + np.log(np.exp(lj - m).sum(0))).mean())

    def fit(self, x, iters: int = 100, tol: float = 1e-6):
        x = np.clip(np.asarray(x, np.float64), EPS, 1 - EPS)
        if len(x) < 4:
            return self
        # start from a split at the median: the upper half seeds the clean component
        med = np.median(x)
        r = np.stack([(x < med).astype(np.float64), (x >= med).astype(np.float64)]) * 0.8 + 0.1
        prev = -np.inf
        for _ in range(iters):
            for k in range(2):
                w = r[k] / max(r[k].sum(), 1e-12)
                m = float((w * x).sum())
                v = float((w * (x - m) ** 2).sum())
                v = max(v, 1e-6)
                common = max(m * (1 - m) / v - 1, 1e-3)
                self.alphas[k], self.betas[k] = max(m * common, 1e-3), max((1 - m) * common, 1e-3)
            self.weights = r.sum(1) / r.sum()
            r = self.responsibilities(x)
            ll = self.log_likelihood(x)
            if _ > 0 and abs(ll - prev) < tol:
                break
            prev = ll
        return self

    @property
    def means(self):
        return self.alphas / (self.alphas + self.betas)

    def clean_posterior(self, x):
        """P(clean | x), clean = the component with the higher mean."""
        return self.responsibilities(x)[int(np.argmax(self.means))]


class ReSup:
    """Per-sample expression weights. ``observe`` records similarities as training
    sees samples; ``maybe_refit`` fits the mixture at epoch ends; ``weights`` gives
    the posterior of the clean component (1 before the first fit)."""

    def __init__(self, num_samples: int, warmup_steps: int = 0, em_iters: int = 100, min_weight: float = 0.0):
        self.similarities = np.full(int(num_samples), np.nan)
        self.warmup_steps = int(warmup_steps)
        self.em_iters = int(em_iters)
        self.min_weight = float(min_weight)
        self.mixture: BetaMixture | None = None
        self.last_fit_epoch = -1

    def weights(self, sims) -> np.ndarray:
        sims = np.asarray(sims, np.float64)
        if self.mixture is None:
            return np.ones_like(sims)
        return np.maximum(self.mixture.clean_posterior(sims), self.min_weight)

    def observe(self, indices, sims) -> None:
        self.similarities[np.asarray(indices, np.int64)] = np.asarray(sims, np.float64)

    def fit(self) -> None:
        seen = self.similarities[~np.isnan(self.similarities)]
        if len(seen) >= 4:
            self.mixture = BetaMixture().fit(seen, self.em_iters)

    def maybe_refit(self, step: int, epoch: int) -> bool:
        """Refit when the expression walk has entered a new epoch (after warm-up)."""
        if step < self.warmup_steps or epoch <= self.last_fit_epoch or epoch == 0:
            return False
        self.last_fit_epoch = epoch
        self.fit()
        return True

    def state_dict(self) -> dict:
        import torch

        mix = None if self.mixture is None else [self.mixture.alphas.tolist(), self.mixture.betas.tolist(), self.mixture.weights.tolist()]
        return {"similarities": torch.from_numpy(self.similarities.copy()), "mixture": mix, "last_fit_epoch": self.last_fit_epoch}

    def load_state_dict(self, state: dict) -> None:
        self.similarities = state["similarities"].numpy().astype(np.float64).copy()
        mix = state["mixture"]
        self.mixture = None if mix is None else BetaMixture(*mix)
        self.last_fit_epoch = int(state["last_fit_epoch"])

    def summary(self) -> dict:
        if self.mixture is None:
            return {}
        clean = int(np.argmax(self.mixture.means))
        return {"resup_clean_mean": float(self.mixture.means[clean]), "resup_noisy_mean": float(self.mixture.means[1 - clean]),
                "resup_clean_share": float(self.mixture.weights[clean])}
