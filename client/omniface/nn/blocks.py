"""Building blocks of ``OmniFaceNet``: conv-BN-ReLU, depthwise-separable convs and
the residual block of the trunk. Every block is BatchNorm + ReLU so that ONNX Runtime
folds BN into the convolution and fuses the activation (one kernel per conv)."""

from __future__ import annotations

from omniface.errors import require

torch = require("torch", "train")
nn = torch.nn


def make_divisible(value: float, divisor: int = 8) -> int:
    """Round a (width-multiplied) channel count to a multiple of ``divisor``, never
    dropping below 90% of the value (the MobileNet rule)."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:
        rounded += divisor
    return rounded


class ConvBNAct(nn.Sequential):
    """Conv2d (no bias) -> BatchNorm2d -> ReLU (optional)."""

    def __init__(self, cin: int, cout: int, kernel: int = 3, stride: int = 1, groups: int = 1, act: bool = True):
        layers: list[nn.Module] = [
            nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False),
            nn.BatchNorm2d(cout),
        ]
        if act:
            layers.append(nn.ReLU(inplace=True))
        super().__init__(*layers)


class DWSep(nn.Sequential):
    """Depthwise 3x3 (stride 1 or 2) -> BN -> ReLU -> pointwise 1x1 -> BN -> ReLU."""

    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__(
            ConvBNAct(cin, cin, 3, stride, groups=cin),
            ConvBNAct(cin, cout, 1),
        )


class ResidualDW(nn.Module):
    """``relu(x + BN(pw(relu(BN(dw3x3(x))))))``: a depthwise-separable conv with an
    identity shortcut; the ReLU comes after the sum."""

    def __init__(self, channels: int):
        super().__init__()
        self.dw = ConvBNAct(channels, channels, 3, 1, groups=channels)
        self.pw = ConvBNAct(channels, channels, 1, act=False)
        self.act = nn.ReLU(inplace=True)

    def forward(self, x):
        return self.act(x + self.pw(self.dw(x)))


class Stage(nn.Sequential):
    """One trunk stage: a stride-2 depthwise-separable downsampling conv followed by
    ``depth`` residual blocks."""

    def __init__(self, cin: int, cout: int, depth: int):
        super().__init__(DWSep(cin, cout, stride=2), *(ResidualDW(cout) for _ in range(depth)))


class DomainBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d with one set of running statistics per input domain ("frames" and
    "crops") and shared affine weights.

    Why: the trunk sees 384x288 (or 640x480) frames in detection steps and 112x112
    aligned crops in attribute steps; their feature statistics differ. With one set of
    running statistics the attribute heads learn on crop batch statistics and are served
    on a blend of both. Measured at 1,200 steps it did not help (MODEL_CARD.md,
    Ablation), so ``model.split_bn`` is off by default. ``domain`` selects the set used
    and updated; an exported graph folds the statistics of the domain active when traced."""

    DOMAINS = ("frames", "crops")

    def __init__(self, num_features: int, **kwargs) -> None:
        super().__init__(num_features, **kwargs)
        self.register_buffer("crops_running_mean", torch.zeros(num_features))
        self.register_buffer("crops_running_var", torch.ones(num_features))
        self.register_buffer("crops_num_batches_tracked", torch.tensor(0, dtype=torch.long))
        self.domain = "frames"

    def forward(self, x):
        if self.domain == "frames":
            return super().forward(x)
        self._swap()
        try:
            return super().forward(x)
        finally:
            self._swap()

    def _swap(self) -> None:
        self.running_mean, self.crops_running_mean = self.crops_running_mean, self.running_mean
        self.running_var, self.crops_running_var = self.crops_running_var, self.running_var
        self.num_batches_tracked, self.crops_num_batches_tracked = self.crops_num_batches_tracked, self.num_batches_tracked


def split_batchnorms(module: nn.Module) -> list[DomainBatchNorm2d]:
    """Replace every BatchNorm2d under ``module`` by a ``DomainBatchNorm2d`` (same
    weights and statistics, copied to both domains); returns the new modules."""
    replaced = []
    for name, child in list(module.named_children()):
        if type(child) is nn.BatchNorm2d:
            new = DomainBatchNorm2d(child.num_features, eps=child.eps, momentum=child.momentum)
            new.load_state_dict(child.state_dict(), strict=False)
            new.crops_running_mean.copy_(child.running_mean)
            new.crops_running_var.copy_(child.running_var)
            setattr(module, name, new)
            replaced.append(new)
        else:
            replaced += split_batchnorms(child)
    return replaced
