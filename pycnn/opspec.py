"""The registry: every fact about a primitive and an activation, in one place that everything else reads.

  * `ACTIVATIONS`  one row per activation with what can run it (pycnn's kernels and where, oneDNN, eager);
  * `OPS`          one entry per IR operation: its module name, shape inference with parameters and FLOPs,
                   summary label and the pycnn.lower function that builds its module;
  * `PRIMITIVES`   one entry per layer name of the language: the IR operation it makes and its arguments;
  * kernel limits  what pycnn's depthwise and grouped kernels accept (the passes and pycnn.nn read them;
                   tests/test_opspec.py checks them against csrc/).

Adding an activation is one `Activation` row here and its name in docs/language.md's table; for pycnn's kernels
to run it, also its enumerator and math in csrc/activation.h and its name in parse_act (csrc/bn_act.h).
Never imports torch (the elaborator reads this).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Dict, Optional, Tuple

Shape = Tuple[int, ...]

# ------------------------------------------------------------------------------------------ kernel limits

DWCONV_MAX_KERNEL = 7          # pycnn.dwconv: odd square kernels up to 7 (csrc/dwconv.h kDwConvMaxKernel)
DWCONV_STRIDES = (1, 2)        # csrc/dwconv.h: stride 1 or 2
DWCONV_DILATIONS = (1, 2)      # csrc/dwconv.h: dilation 1 or 2
GCONV_KERNELS = (1, 3)         # pycnn.gconv: 1x1 or 3x3 (csrc/gconv.h)
MBCONV_DTYPES = {              # pycnn.mbconv's kernels per device type: csrc/cpu/mbconv.cpp, csrc/cuda/mbconv.cu
    "cpu": ("float32", "float64"),
    "cuda": ("float16", "bfloat16", "float32", "float64"),
}
GCONV_MAX_GROUP_WIDTH = 256    # pycnn.gconv's tuned range (a choice, not a check of the kernel): wider groups
                               # are dense convolutions in all but name and run as such


def dwconv_kernel_ok(k: int) -> bool:
    return isinstance(k, int) and not isinstance(k, bool) and k % 2 == 1 and 1 <= k <= DWCONV_MAX_KERNEL


# ------------------------------------------------------------------------------------------ activations

@dataclass(frozen=True)
class Activation:
    """One activation. `cpp` is its pycnn::Act enumerator in csrc/activation.h (None: pycnn's kernels do not
    run it); the flags say where the passes may hand it to a fused op."""
    name: str
    module: str                    # its torch.nn class (a layer of the reference backend, an SE's act)
    eager: str                     # its eager function: "F.<name>" (torch.nn.functional) or "torch.<name>"
    cpp: Optional[Tuple[str, int]] = None  # (enumerator, value) of pycnn::Act
    bn_act: bool = False           # a bn followed by it runs as one bn_act / conv_bn_act op (pycnn.bn_act, the
                                   # epilogues of pycnn.dwconv and pycnn.gconv)
    residual: bool = False         # after a residual add, applied by the fused op that adds (the residual pass)
    se_hidden: bool = False        # pycnn.se runs it after the first FC
    se_gate: bool = False          # pycnn.se's gate
    mask_from_output: bool = False  # its derivative is readable from its output: pycnn.bn_act keeps the output
                                    # for backward instead of the residual (memory saving)
    inplace: bool = False          # the eager function takes inplace=True (epilogues reuse the tensor)
    inplace_with_grad: bool = False  # and runs in place under autograd too, differentiated from its output
                                     # (relu_; relu6_ and silu_ clone first there): the eager composition's
                                     # epilogue overwrites the fresh tensor in training (fused.epilogue_)
    onednn: Optional[Tuple[str, Tuple[float, ...]]] = None  # oneDNN's unary post-op (name, scalars)
    aten_inplace: Optional[Tuple[str, Tuple[float, ...]]] = None  # its in-place ATen op and the op's other
                                                                   # arguments (pycnn::eval_conv_bn_act's plans)


_KERNEL_ACT = dict(bn_act=True, residual=True, se_hidden=True, inplace=True)

ACTIVATIONS: Dict[str, Activation] = {a.name: a for a in (
    Activation("relu", "ReLU", "F.relu", ("ReLU", 1), **_KERNEL_ACT, mask_from_output=True, inplace_with_grad=True,
               onednn=("relu", ()), aten_inplace=("relu_", ())),
    Activation("relu6", "ReLU6", "F.relu6", ("ReLU6", 2), **_KERNEL_ACT, mask_from_output=True,
               onednn=("hardtanh", (0.0, 6.0)), aten_inplace=("hardtanh_", (0.0, 6.0))),
    Activation("silu", "SiLU", "F.silu", ("SiLU", 3), **_KERNEL_ACT, onednn=("swish", ()), aten_inplace=("silu_", ())),
    # hardswish runs in every kernel, but MobileNetV3's bn + hardswish stays two layers (it is not fused)
    Activation("hardswish", "Hardswish", "F.hardswish", ("HardSwish", 4), se_hidden=True, inplace=True,
               onednn=("hardswish", ()), aten_inplace=("hardswish_", ())),
    Activation("hardsigmoid", "Hardsigmoid", "F.hardsigmoid"),
    Activation("sigmoid", "Sigmoid", "torch.sigmoid", se_gate=True),
    Activation("gelu", "GELU", "F.gelu"),
    Activation("tanh", "Tanh", "torch.tanh"),
)}

NONE_CPP = ("None", 0)  # pycnn::Act::None: the kernels' "none" (no activation)

LANGUAGE_ACTS: Tuple[str, ...] = tuple(ACTIVATIONS)  # the activation layers of the language
KERNEL_ACTS: Tuple[str, ...] = ("none",) + tuple(a.name for a in ACTIVATIONS.values() if a.cpp)  # pycnn's ops' `act`


def acts_with(flag: str) -> Tuple[str, ...]:
    """The activations with a capability: acts_with("bn_act") == ("relu", "relu6", "silu")."""
    return tuple(a.name for a in ACTIVATIONS.values() if getattr(a, flag))


def check_kernel_act(where: str, what: str, act: str) -> None:
    """ValueError unless pycnn's kernels run `act` (the message lists what they run)."""
    if act not in KERNEL_ACTS:
        raise ValueError(f"{where}: unknown {what} {act!r}; expected one of {', '.join(KERNEL_ACTS)}")


# ------------------------------------------------------------------------------------------ shapes

SAME = "same"  # a conv's `p`: TensorFlow's SAME padding (asymmetric, computed from the input size at run time)


class ShapeError(Exception):
    """Raised by shape inference; `arg` names the argument at fault (the elaborator points the caret at it)."""

    def __init__(self, message: str, arg: Optional[str] = None):
        super().__init__(message)
        self.message, self.arg = message, arg


def fmt_shape(shape: Shape) -> str:
    return "x".join(str(d) for d in shape)


def conv_output_size(size: int, k: int, s: int, p: int, d: int, ceil: bool = False) -> int:
    span = size + 2 * p - d * (k - 1) - 1
    if span < 0:
        return 0
    if ceil:
        out = -(-span // s) + 1
        if (out - 1) * s >= size + p:  # PyTorch: the last window must start inside the input or left padding
            out -= 1
        return out
    return span // s + 1


def _spatial(in_shape: Shape, op: str) -> Tuple[int, int, int]:
    if len(in_shape) != 3:
        raise ShapeError(f"{op} needs an image input (channels x height x width), got {fmt_shape(in_shape)}")
    return in_shape


def _check_spatial(op: str, h: int, w: int, in_shape: Shape):
    if h < 1 or w < 1:
        raise ShapeError(f"spatial size reaches zero: {op} on {fmt_shape(in_shape)} gives {h}x{w}")


# Each function: (attrs, input shape) -> (output shape, parameters, FLOPs). FLOPs are multiply-adds counted as
# pycls does: convolutions and linear layers (plus their bias), nothing for normalization, activations, pooling.

def _infer_conv(op):
    def infer(a, in_shape):
        c, h, w = _spatial(in_shape, op)
        (kh, kw), (sh, sw), (dh, dw) = a["k"], a["s"], a["d"]
        groups, out = a["groups"], a["out"]
        if c % groups:
            raise ShapeError(f"groups={groups} does not divide the {c} input channels", "groups")
        if out % groups:
            raise ShapeError(f"groups={groups} does not divide the {out} output channels", "groups")
        if a["p"] == SAME:  # TensorFlow's SAME: ceil(size / stride) whatever the kernel
            ho, wo = -(-h // sh), -(-w // sw)
        else:
            (ph, pw) = a["p"]
            ho, wo = conv_output_size(h, kh, sh, ph, dh), conv_output_size(w, kw, sw, pw, dw)
            _check_spatial(f"{op} k={kh}x{kw} s={sh}x{sw} p={ph}x{pw}", ho, wo, in_shape)
        weights = out * (c // groups) * kh * kw
        params = weights + (out if a["bias"] else 0) + (out if op == "wsconv" else 0)
        flops = weights * ho * wo + (out * ho * wo if a["bias"] else 0)
        return (out, ho, wo), params, flops
    return infer


def _infer_norm(op):
    def infer(a, in_shape):
        if len(in_shape) == 3:
            c = in_shape[0]
        elif op == "ln":
            c = in_shape[-1]
        else:
            raise ShapeError(f"{op} needs an image input (channels x height x width), got {fmt_shape(in_shape)}")
        if op == "gn" and c % a["groups"]:
            raise ShapeError(f"gn groups={a['groups']} does not divide the {c} channels", "groups")
        return in_shape, 2 * c, 0
    return infer


def _infer_pool(op):
    def infer(a, in_shape):
        c, h, w = _spatial(in_shape, op)
        if a["p"] == SAME:
            return (c, -(-h // a["s"][0]), -(-w // a["s"][1])), 0, 0
        (kh, kw), (sh, sw), (ph, pw) = a["k"], a["s"], a["p"]
        if ph * 2 > kh or pw * 2 > kw:
            raise ShapeError(f"{op} padding {ph}x{pw} must be at most half the window {kh}x{kw}", "p")
        ho, wo = conv_output_size(h, kh, sh, ph, 1, a["ceil"]), conv_output_size(w, kw, sw, pw, 1, a["ceil"])
        _check_spatial(f"{op} k={kh}x{kw} s={sh}x{sw} p={ph}x{pw}", ho, wo, in_shape)
        return (c, ho, wo), 0, 0
    return infer


def _infer_global(op):
    def infer(a, in_shape):
        c, _, _ = _spatial(in_shape, op)
        return (c, 1, 1), 0, 0
    return infer


def _infer_adaptive(a, in_shape):
    c, _, _ = _spatial(in_shape, "adaptive_avgpool")
    return (c,) + tuple(a["size"]), 0, 0


def _infer_flatten(a, in_shape):
    return (math.prod(in_shape),), 0, 0


def _infer_linear(a, in_shape):
    if len(in_shape) != 1:
        raise ShapeError(f"linear needs a flat input; got {fmt_shape(in_shape)} (add `flatten` before it)")
    f, out = in_shape[0], a["out"]
    params = f * out + (out if a["bias"] else 0)
    return (out,), params, params


def _infer_se(a, in_shape):
    c, _, _ = _spatial(in_shape, "se")
    r = a["reduced"]
    params = c * r + r + r * c + c
    return in_shape, params, params


def _infer_channel_linear(a, in_shape):
    c, h, w = _spatial(in_shape, "channel_linear")
    out = a["out"]
    params = c * out + (out if a["bias"] else 0)
    return (out, h, w), params, params * h * w


def _infer_layer_scale(a, in_shape):
    c, _, _ = _spatial(in_shape, "layer_scale")
    return in_shape, c, 0


def _infer_gain(a, in_shape):
    return in_shape, 1, 0


def _infer_slice(a, in_shape):
    c, h, w = _spatial(in_shape, "slice")
    start, stop = a["start"], a["stop"]
    if stop > c:
        raise ShapeError(f"slice({start}, {stop}) reaches beyond the {c} channels", "stop")
    if start >= stop:
        raise ShapeError(f"slice({start}, {stop}) selects no channel (start must be below stop)", "start")
    return (stop - start, h, w), 0, 0


def _infer_shuffle(a, in_shape):
    c, _, _ = _spatial(in_shape, "channel_shuffle")
    if c % a["groups"]:
        raise ShapeError(f"channel_shuffle groups={a['groups']} does not divide the {c} channels", "groups")
    return in_shape, 0, 0


def _infer_pad(a, in_shape):
    c, h, w = _spatial(in_shape, "pad")
    oh, ow = h + a["top"] + a["bottom"], w + a["left"] + a["right"]
    # a crop on one side may not pass the far edge of the input (nn.ZeroPad2d's narrow() refuses that at run time)
    if oh < 1 or ow < 1 or h + min(a["top"], 0) + min(a["bottom"], 0) < 0 \
            or w + min(a["left"], 0) + min(a["right"], 0) < 0:
        raise ShapeError(f"pad({a['left']}, {a['right']}, {a['top']}, {a['bottom']}) leaves {oh}x{ow} of the "
                         f"{h}x{w} input", "left")
    return (c, oh, ow), 0, 0


def _infer_same_shape(a, in_shape):
    return in_shape, 0, 0


# ------------------------------------------------------------------------------------------ summary labels

def _label_conv(op):
    def label(a):
        k = "x".join(map(str, a["k"]))
        s = a["s"][0] if a["s"][0] == a["s"][1] else "x".join(map(str, a["s"]))
        g = f" g{a['groups']}" if a["groups"] > 1 else ""
        return f"{op} {k} s{s}{g}"
    return label


def _label_pool(op):
    return lambda a: f"{op} {'x'.join(map(str, a['k']))} s{a['s'][0]}"


# ------------------------------------------------------------------------------------------ operations

@dataclass(frozen=True)
class Op:
    """One IR operation (pycnn.ir.Layer.op)."""
    name: str
    module_name: Optional[str]   # layers are named <module_name><n> (conv1, pool2); None: the call's name (relu1)
    infer: Callable[[dict, Shape], Tuple[Shape, int, int]]
    lowering: str                # the function of pycnn.lower that builds its module from the layer
    label: Optional[Callable[[dict], str]] = None  # its op column in pycnn.summary (default: the op's name)

    def summary_label(self, attrs: dict) -> str:
        return self.label(attrs) if self.label else self.name


OPS: Dict[str, Op] = {o.name: o for o in (
    Op("conv", "conv", _infer_conv("conv"), "lower_conv", _label_conv("conv")),
    Op("wsconv", "conv", _infer_conv("wsconv"), "lower_wsconv", _label_conv("wsconv")),
    Op("bn", "bn", _infer_norm("bn"), "lower_bn"),
    Op("gn", "gn", _infer_norm("gn"), "lower_gn"),
    Op("ln", "ln", _infer_norm("ln"), "lower_ln"),
    Op("act", None, _infer_same_shape, "lower_act", lambda a: a["kind"]),
    Op("maxpool", "pool", _infer_pool("maxpool"), "lower_maxpool", _label_pool("maxpool")),
    Op("avgpool", "pool", _infer_pool("avgpool"), "lower_avgpool", _label_pool("avgpool")),
    Op("gap", "pool", _infer_global("gap"), "lower_gap"),
    Op("gmp", "pool", _infer_global("gmp"), "lower_gmp"),
    Op("adaptive_avgpool", "pool", _infer_adaptive, "lower_adaptive_avgpool"),
    Op("flatten", "flatten", _infer_flatten, "lower_flatten"),
    Op("linear", "fc", _infer_linear, "lower_linear"),
    Op("dropout", "drop", _infer_same_shape, "lower_dropout"),
    Op("identity", "identity", _infer_same_shape, "lower_identity"),
    Op("se", "se", _infer_se, "lower_se"),
    Op("scale", "scale", _infer_same_shape, "lower_scale"),
    Op("channel_shuffle", "shuffle", _infer_shuffle, "lower_channel_shuffle"),
    Op("channel_linear", "fc", _infer_channel_linear, "lower_channel_linear"),
    Op("layer_scale", "ls", _infer_layer_scale, "lower_layer_scale"),
    Op("gain", "gain", _infer_gain, "lower_gain"),
    Op("drop_path", "drop_path", _infer_same_shape, "lower_drop_path"),
    Op("slice", "slice", _infer_slice, "lower_slice"),
    Op("pad", "pad", _infer_pad, "lower_pad"),
)}


def infer(op: str, attrs: dict, in_shape: Shape) -> Tuple[Shape, int, int]:
    """(output shape, parameter count, FLOPs) of one layer; raises ShapeError."""
    if op not in OPS:
        raise ShapeError(f"unknown operation {op!r}")
    return OPS[op].infer(attrs, in_shape)


# ------------------------------------------------------------------------------------------ the language

REQUIRED = object()  # an argument without a default


@dataclass(frozen=True)
class Arg:
    """An argument of a primitive. kind: width (int >= 1), pair (int >= 1 or a pair), pad (int/pair >= 0),
    convpad (like pad; None = the symmetric default d*(k-1)/2, `same` = TensorFlow's SAME), nonneg (int >= 0),
    int (any integer),
    pos (int >= 1), bool, prob (0 <= p <= 1), posfloat (> 0), float, act (activation name or none),
    rounding, block (a block's name)."""
    name: str
    default: object
    kind: str

    def __iter__(self):  # `for name, default, kind in spec`
        return iter((self.name, self.default, self.kind))


def arguments(*specs) -> Tuple[Arg, ...]:
    return tuple(Arg(*s) for s in specs)


_CONV_ARGS = (("out", REQUIRED, "width"), ("k", 1, "pair"), ("s", 1, "pair"), ("p", None, "convpad"),
              ("d", 1, "pair"), ("groups", None, "pos"), ("group_width", None, "pos"))


@dataclass(frozen=True)
class Primitive:
    """A layer name of the language: the IR operation it makes and its arguments in positional order."""
    name: str
    op: str
    args: Tuple[Arg, ...] = ()


PRIMITIVES: Dict[str, Primitive] = {p.name: p for p in (
    Primitive("conv", "conv", arguments(*_CONV_ARGS, ("bias", False, "bool"))),
    Primitive("wsconv", "wsconv", arguments(*_CONV_ARGS, ("bias", True, "bool"), ("gamma", 1.0, "posfloat"),
                                        ("eps", 1e-6, "posfloat"))),
    Primitive("dwconv", "conv", arguments(("k", 3, "pair"), ("s", 1, "pair"), ("p", None, "convpad"), ("d", 1, "pair"),
                                      ("multiplier", 1, "pos"), ("bias", False, "bool"))),
    Primitive("bn", "bn", arguments(("eps", 1e-5, "posfloat"), ("momentum", 0.1, "prob"))),
    Primitive("gn", "gn", arguments(("groups", REQUIRED, "pos"), ("eps", 1e-5, "posfloat"))),
    Primitive("ln", "ln", arguments(("eps", 1e-5, "posfloat"))),
    Primitive("maxpool", "maxpool", arguments(("k", REQUIRED, "pair"), ("s", None, "pair"), ("p", 0, "convpad"),
                                          ("ceil", False, "bool"))),
    Primitive("avgpool", "avgpool", arguments(("k", None, "pair"), ("s", None, "pair"), ("p", 0, "convpad"),
                                          ("ceil", False, "bool"), ("count_pad", True, "bool"))),
    Primitive("gap", "gap"),
    Primitive("global_avgpool", "gap"),
    Primitive("global_maxpool", "gmp"),
    Primitive("adaptive_avgpool", "adaptive_avgpool", arguments(("size", REQUIRED, "pair"))),
    Primitive("flatten", "flatten"),
    Primitive("linear", "linear", arguments(("out", REQUIRED, "width"), ("bias", True, "bool"))),
    Primitive("dropout", "dropout", arguments(("p", 0.5, "prob"))),
    Primitive("identity", "identity"),
    Primitive("se", "se", arguments(("reduced", REQUIRED, "width"), ("act", "relu", "act"), ("gate", "sigmoid", "act"))),
    Primitive("scale", "scale", arguments(("value", REQUIRED, "float"))),
    Primitive("channel_shuffle", "channel_shuffle", arguments(("groups", REQUIRED, "pos"))),
    Primitive("channel_linear", "channel_linear", arguments(("out", REQUIRED, "width"), ("bias", True, "bool"))),
    Primitive("layer_scale", "layer_scale", arguments(("init", 1e-6, "float"))),
    Primitive("gain", "gain", arguments(("init", 1.0, "float"))),
    Primitive("drop_path", "drop_path", arguments(("p", 0.0, "prob"))),
    Primitive("slice", "slice", arguments(("start", REQUIRED, "nonneg"), ("stop", REQUIRED, "pos"))),
    Primitive("pad", "pad", arguments(("left", REQUIRED, "int"), ("right", REQUIRED, "int"), ("top", REQUIRED, "int"),
                                      ("bottom", REQUIRED, "int"))),
    *(Primitive(name, "act") for name in ACTIVATIONS),
)}
