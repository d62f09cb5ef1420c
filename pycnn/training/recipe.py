"""The training recipe: options, optimizer, learning-rate schedule, augmentation, mixup/cutmix, gradient
clipping (by norm, adaptive), weight EMA and early stopping. Each piece is a small function or class with no
knowledge of the loop (pycnn.train.loop), so tests can check it alone."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class Recipe:
    epochs: int = 10
    batch_size: int = 128
    optimizer: str = "sgd"  # sgd | adamw
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 5e-4
    decay_norm_and_bias: bool = False  # weight decay on BN/LN/GN parameters and biases too
    schedule: str = "cosine"  # cosine | step | constant
    warmup_epochs: float = 0.0
    step_size: int = 30  # step schedule: epochs between decays
    step_gamma: float = 0.1
    min_lr: float = 0.0
    label_smoothing: float = 0.0
    crop: str = "none"  # none | pad | resized
    crop_padding: int = 4
    flip: bool = False
    mixup: float = 0.0  # alpha; 0 disables
    cutmix: float = 0.0  # alpha; 0 disables (with both: one of the two per batch, chosen at random)
    val_split: float = 0.1
    patience: Optional[int] = None  # early stopping: epochs without a better validation loss
    clip_grad: Optional[float] = None  # max global gradient norm
    agc: Optional[float] = None  # adaptive gradient clipping lambda (Brock et al. 2021)
    amp: str = "none"  # none | bf16 | fp16 (fp16: CUDA only)
    channels_last: bool = False
    ema: Optional[float] = None  # decay of the weight EMA, e.g. 0.999; evaluation uses the EMA weights
    seed: int = 0

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "Recipe":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})

    def check(self) -> None:
        """Raise ValueError (one line) on inconsistent options."""
        if self.optimizer not in ("sgd", "adamw"):
            raise ValueError(f"optimizer must be sgd or adamw, got {self.optimizer!r}")
        if self.schedule not in ("cosine", "step", "constant"):
            raise ValueError(f"schedule must be cosine, step or constant, got {self.schedule!r}")
        if self.crop not in ("none", "pad", "resized"):
            raise ValueError(f"crop must be none, pad or resized, got {self.crop!r}")
        if self.amp not in ("none", "bf16", "fp16"):
            raise ValueError(f"amp must be none, bf16 or fp16, got {self.amp!r}")
        if self.epochs < 1 or self.batch_size < 1 or self.lr <= 0:
            raise ValueError("epochs and batch size must be >= 1 and the learning rate > 0")
        if not 0 <= self.val_split < 1:
            raise ValueError(f"the validation split must be in [0, 1), got {self.val_split}")
        if self.patience is not None and self.val_split <= 0:
            raise ValueError("early stopping (--patience) needs a validation split (--val-split > 0)")


# ---- optimizer and schedule -----------------------------------------------------------------------------------

def _no_decay(name: str, module: nn.Module, param: torch.Tensor) -> bool:
    return param.dim() <= 1 or isinstance(module, (nn.BatchNorm2d, nn.GroupNorm, nn.LayerNorm))


def param_groups(model: nn.Module, weight_decay: float, decay_norm_and_bias: bool) -> List[dict]:
    """Two groups: weights with decay, and (unless decay_norm_and_bias) norm parameters and biases without."""
    decay, no_decay = [], []
    for module_name, module in model.named_modules():
        for name, p in module.named_parameters(recurse=False):
            if not p.requires_grad:
                continue
            (no_decay if not decay_norm_and_bias and _no_decay(name, module, p) else decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    return groups


def make_optimizer(model: nn.Module, r: Recipe) -> torch.optim.Optimizer:
    groups = param_groups(model, r.weight_decay, r.decay_norm_and_bias)
    if r.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=r.lr)
    return torch.optim.SGD(groups, lr=r.lr, momentum=r.momentum, nesterov=r.nesterov and r.momentum > 0)


def learning_rate(r: Recipe, step: int, steps_per_epoch: int) -> float:
    """The learning rate at optimizer step `step` (0-based): linear warmup, then the schedule, per step."""
    total = r.epochs * steps_per_epoch
    warmup = int(round(r.warmup_epochs * steps_per_epoch))
    if step < warmup:
        return r.lr * (step + 1) / warmup
    if r.schedule == "constant":
        return r.lr
    if r.schedule == "step":
        return r.lr * r.step_gamma ** ((step // steps_per_epoch) // max(1, r.step_size))
    t = (step - warmup) / max(1, total - warmup)
    return r.min_lr + (r.lr - r.min_lr) * 0.5 * (1 + math.cos(math.pi * min(1.0, t)))


# ---- augmentation ---------------------------------------------------------------------------------------------

def augment(x: torch.Tensor, r: Recipe, gen: torch.Generator) -> torch.Tensor:
    """Random crop (padding or resized) and horizontal flip of a float batch (N, C, H, W), drawn from `gen`."""
    n, _, h, w = x.shape
    if r.crop == "pad" and r.crop_padding > 0:
        p = r.crop_padding
        padded = F.pad(x, (p, p, p, p))
        dy = torch.randint(0, 2 * p + 1, (n,), generator=gen)
        dx = torch.randint(0, 2 * p + 1, (n,), generator=gen)
        rows = (dy.view(n, 1) + torch.arange(h)).view(n, 1, h, 1).expand(n, x.shape[1], h, w + 2 * p)
        x = padded.gather(2, rows)
        cols = (dx.view(n, 1) + torch.arange(w)).view(n, 1, 1, w).expand(n, x.shape[1], h, w)
        x = x.gather(3, cols)
    elif r.crop == "resized":
        out = torch.empty_like(x)
        area = torch.empty(n).uniform_(0.35, 1.0, generator=gen) * h * w
        log_ratio = torch.empty(n).uniform_(math.log(3 / 4), math.log(4 / 3), generator=gen)
        u = torch.rand(n, 2, generator=gen)
        for i in range(n):
            ratio = math.exp(log_ratio[i])
            ch = min(h, max(1, int(round(math.sqrt(area[i] / ratio)))))
            cw = min(w, max(1, int(round(math.sqrt(area[i] * ratio)))))
            top, left = int(u[i, 0] * (h - ch + 1)), int(u[i, 1] * (w - cw + 1))
            out[i] = F.interpolate(x[i:i + 1, :, top:top + ch, left:left + cw], size=(h, w), mode="bilinear",
                                   align_corners=False)[0]
        x = out
    if r.flip:
        flip = torch.rand(n, generator=gen) < 0.5
        x = torch.where(flip.view(n, 1, 1, 1), x.flip(3), x)
    return x


def mix(x: torch.Tensor, y: torch.Tensor, classes: int, r: Recipe, gen: torch.Generator,
        smoothing: float = 0.0) -> Tuple[torch.Tensor, torch.Tensor]:
    """Mixup (Zhang et al. 2017) or CutMix (Yun et al. 2019) of a batch with its reverse: returns the mixed
    images and soft targets (N, classes). With neither enabled, the (smoothed) one-hot targets."""
    target = F.one_hot(y, classes).float()
    if smoothing:
        target = target * (1 - smoothing) + smoothing / classes
    modes = [m for m, a in (("mixup", r.mixup), ("cutmix", r.cutmix)) if a > 0]
    if not modes:
        return x, target
    mode = modes[int(torch.randint(0, len(modes), (1,), generator=gen))] if len(modes) > 1 else modes[0]
    alpha = r.mixup if mode == "mixup" else r.cutmix
    lam = _beta(alpha, gen)
    x2, t2 = x.flip(0), target.flip(0)
    if mode == "mixup":
        return lam * x + (1 - lam) * x2, lam * target + (1 - lam) * t2
    h, w = x.shape[-2:]
    box = cutmix_box(h, w, lam, gen)
    top, bottom, left, right = box
    x = x.clone()
    x[..., top:bottom, left:right] = x2[..., top:bottom, left:right]
    lam = 1 - (bottom - top) * (right - left) / (h * w)  # the area actually pasted
    return x, lam * target + (1 - lam) * t2


def _beta(alpha: float, gen: torch.Generator) -> float:
    """A Beta(alpha, alpha) sample from `gen` (as a ratio of two Gamma draws made from uniforms)."""
    # torch.distributions takes no generator; the ratio X/(X+Y) of Gamma(alpha) draws is Beta(alpha, alpha)
    a = torch._standard_gamma(torch.full((2,), float(alpha)), generator=gen)
    return float(a[0] / a.sum()) if a.sum() > 0 else 0.5


def cutmix_box(h: int, w: int, lam: float, gen: torch.Generator) -> Tuple[int, int, int, int]:
    """(top, bottom, left, right) of a box with area about (1 - lam) * h * w, centred at random, clipped."""
    cut = math.sqrt(1 - lam)
    ch, cw = int(h * cut), int(w * cut)
    cy, cx = int(torch.randint(0, h, (1,), generator=gen)), int(torch.randint(0, w, (1,), generator=gen))
    return max(cy - ch // 2, 0), min(cy + ch // 2, h), max(cx - cw // 2, 0), min(cx + cw // 2, w)


def soft_cross_entropy(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return -(target * F.log_softmax(logits.float(), dim=1)).sum(1).mean()


# ---- gradient clipping ----------------------------------------------------------------------------------------

def _unit_norm(t: torch.Tensor) -> torch.Tensor:
    """Norm per output unit: over every dim but the first (whole tensor for vectors and scalars)."""
    if t.dim() <= 1:
        return t.norm()
    return torch.linalg.vector_norm(t, dim=tuple(range(1, t.dim())), keepdim=True)


@torch.no_grad()
def adaptive_clip_(params, clipping: float, eps: float = 1e-3) -> None:
    """AGC (Brock et al. 2021): scale each unit's gradient so that ||G|| / max(||W||, eps) <= clipping."""
    for p in params:
        if p.grad is None:
            continue
        max_norm = _unit_norm(p).clamp_min(eps) * clipping
        g_norm = _unit_norm(p.grad)
        p.grad.mul_(torch.where(g_norm > max_norm, max_norm / g_norm.clamp_min(1e-6), torch.ones_like(g_norm)))


def agc_params(model: nn.Module) -> List[torch.Tensor]:
    """The parameters AGC clips: all but the final linear (classifier) layer's, as in the NFNet paper."""
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    skip = {id(p) for p in linears[-1].parameters()} if linears else set()
    return [p for p in model.parameters() if id(p) not in skip]


# ---- EMA and early stopping -----------------------------------------------------------------------------------

class EMA:
    """Exponential moving average of a model's parameters and buffers (buffers are copied)."""

    def __init__(self, model: nn.Module, decay: float):
        self.decay = decay
        self.state: Dict[str, torch.Tensor] = {k: v.detach().clone() for k, v in model.state_dict().items()}

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        for k, v in model.state_dict().items():
            if v.is_floating_point():
                self.state[k].mul_(self.decay).add_(v.detach(), alpha=1 - self.decay)
            else:
                self.state[k].copy_(v)


@dataclass
class EarlyStopping:
    """Stop when the validation loss has not improved for `patience` epochs."""
    patience: Optional[int]
    best: float = math.inf
    best_epoch: int = -1
    bad_epochs: int = 0

    def step(self, epoch: int, val_loss: float) -> bool:
        """Record an epoch's validation loss; True when training should stop."""
        if val_loss < self.best:
            self.best, self.best_epoch, self.bad_epochs = val_loss, epoch, 0
        else:
            self.bad_epochs += 1
        return self.patience is not None and self.bad_epochs >= self.patience
