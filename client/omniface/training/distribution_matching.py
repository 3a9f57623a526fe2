"""Distribution matching between two heads (after Kollias et al., "Distribution
Matching for Multi-Task Learning of Classification Tasks", AAAI 2024).

A relation matrix ``R[a, b] = P(b | a)`` ties a categorical or binary head A to another
head B. On every sample, labelled for A, for B, for both or for neither, the
distribution over B's classes implied by A's prediction, ``q = p_A @ R``, is matched to
B's own prediction ``p_B``:

    loss = mean_i KL(q_i || p_B,i)                      (default)
    loss = mean_i 0.5 [KL(q || p_B) + KL(p_B || q)]     (``symmetric = true``)

A binary head's distribution is ``[1 - p, p]``; a categorical head's is its softmax.

Stop-gradient: by default (``stop_grad = "none"``) both heads receive the gradient, so a
smile-labelled GENKI face teaches the expression head that a smile means "happy" and
an expression-labelled FER face teaches the smile head, which is the point of matching
on unlabelled samples. ``"a"`` detaches q (only B learns from A, a soft pseudo-label);
``"b"`` detaches p_B (only A learns).

The default pair is expression -> smile with P(smile | happy) = 0.9 and P(smile | any
other expression) = 0.07 (settable, per class).
"""

from __future__ import annotations

from omniface import contract
from omniface.errors import require

from .losses import OUTPUT_KEYS

torch = require("torch", "train")
F = torch.nn.functional

CLASSES = {
    "expression": contract.EXPRESSIONS,
    "gender": contract.GENDERS,
    "smile": ("no_smile", "smile"),
    "glasses": ("no_glasses", "glasses"),
}
BINARY = frozenset({"gender", "smile", "glasses"})


def head_distribution(out: dict, task: str):
    """Class distribution ``[N, C]`` of a categorical or binary head."""
    x = out[OUTPUT_KEYS[task]]
    if task in BINARY:
        p = torch.sigmoid(x)
        return torch.stack([1 - p, p], dim=1)
    return torch.softmax(x, dim=1)


def relation_matrix(a: str, b: str, relation) -> torch.Tensor:
    """``R [C_a, C_b]`` from a full matrix (rows = A's classes), or, for a binary B, a
    mapping ``{A class name: P(B = 1 | class), "default": P(B = 1 | other classes)}``.
    Rows are normalised to sum to 1."""
    ca, cb = CLASSES[a], CLASSES[b]
    if isinstance(relation, dict):
        if b not in BINARY:
            raise ValueError(f"a per-class mapping needs a binary head B; {b!r} has {len(cb)} classes")
        unknown = set(relation) - set(ca) - {"default"}
        if unknown:
            raise ValueError(f"relation {a}->{b}: unknown {a} classes {sorted(unknown)}")
        p1 = torch.tensor([float(relation.get(c, relation.get("default", 0.5))) for c in ca])
        r = torch.stack([1 - p1, p1], dim=1)
    else:
        r = torch.as_tensor(relation, dtype=torch.float32)
        if r.shape != (len(ca), len(cb)):
            raise ValueError(f"relation {a}->{b} must be {len(ca)}x{len(cb)}, got {tuple(r.shape)}")
    if (r < 0).any():
        raise ValueError(f"relation {a}->{b} has negative entries")
    return r / r.sum(1, keepdim=True)


def _kl(p, q, eps: float = 1e-7):
    """KL(p || q) per row."""
    p, q = p.clamp_min(eps), q.clamp_min(eps)
    return (p * (p.log() - q.log())).sum(1)


def match_loss(p_a, p_b, relation, symmetric: bool = False, stop_grad: str = "none"):
    """Mean over samples of KL(p_a @ R || p_b) (or the symmetric mean of both KLs)."""
    if stop_grad not in ("none", "a", "b"):
        raise ValueError(f"stop_grad must be 'none', 'a' or 'b', got {stop_grad!r}")
    q = p_a @ relation.to(p_a.device, p_a.dtype)
    if stop_grad == "a":
        q = q.detach()
    elif stop_grad == "b":
        p_b = p_b.detach()
    loss = _kl(q, p_b)
    if symmetric:
        loss = 0.5 * (loss + _kl(p_b, q))
    return loss.mean()


class DistributionMatching:
    """The configured pairs; ``__call__(out)`` -> summed loss over pairs, or None when
    no pair's heads are in ``out``."""

    def __init__(self, pairs: list[dict], symmetric: bool = False, stop_grad: str = "none"):
        self.pairs = []
        for pair in pairs:
            a, b = pair["a"], pair["b"]
            self.pairs.append((a, b, relation_matrix(a, b, pair["relation"]),
                               bool(pair.get("symmetric", symmetric)), pair.get("stop_grad", stop_grad)))

    def __call__(self, out: dict):
        terms = [match_loss(head_distribution(out, a), head_distribution(out, b), r, sym, sg)
                 for a, b, r, sym, sg in self.pairs if OUTPUT_KEYS[a] in out and OUTPUT_KEYS[b] in out]
        return torch.stack(terms).sum() if terms else None
