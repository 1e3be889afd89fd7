"""Batch norms with frozen statistics folded into the convolution before them.

A batch norm in eval mode (its running statistics frozen: `model.freeze_norm_stats`, or
evaluation) is a per-channel affine map, so conv -> BN is one convolution with scaled weights and
a bias:

    conv(x, W * s) + (beta - mean * s),   s = gamma / sqrt(var + eps)

That is one pass over the activations instead of two, forward and backward, and one activation
fewer kept for backward. Where the norm's own activation follows (timm's BatchNormAct2d with a
ReLU or ReLU6), the folded convolution applies it in the same oneDNN call on CPU
(sft.models.conv_activation): one more pass fewer. W, gamma and beta still get their gradients,
through s: the same function to float rounding. A batch norm in training mode (batch
statistics) runs as it is; the choice is made per call from its `training` flag.

torch's `fuse_conv_bn_eval` and timm's `FrozenBatchNorm2d` do not fit: the first returns new
leaf weights (no gradients reach the originals), the second freezes gamma and beta as well.
Measured: benchmarks/norm_folding.py (experiments/benchmarks/norm_folding.md).
"""

from __future__ import annotations

import copy
import functools
import logging
from collections.abc import Callable

import torch
from torch import nn

from sft.errors import first_line
from sft.models import pointwise_conv
from sft.models.conv_activation import conv2d_activation, post_op
from sft.models.padding import pad_same, same_padded_conv

log = logging.getLogger(__name__)

ConvCall = Callable[[nn.Module, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
# a ConvCall that also applies the module given last
ActivationCall = Callable[
    [nn.Module, torch.Tensor, torch.Tensor, torch.Tensor, nn.Module], torch.Tensor
]
NormTail = Callable[[nn.Module, torch.Tensor], torch.Tensor]


def _conv2d(conv: nn.Conv2d, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor):
    return conv._conv_forward(x, weight, bias)  # padding modes included


def _no_tail(norm: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return x


def _act_tail(norm: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return norm.act(norm.drop(x))  # timm's BatchNormAct2d: norm, then dropout and activation


def _conv2d_activation(
    conv: nn.Conv2d,
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    activation: nn.Module,
) -> torch.Tensor:
    if pointwise_conv.is_routed(conv):  # its backward timed against matrix products
        return conv._conv_forward(x, weight, bias, activation)
    return conv2d_activation(
        x, weight, bias, conv.stride, conv.padding, conv.dilation, conv.groups, activation
    )


def _same_padded_conv_activation(
    conv: nn.Conv2d,
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    activation: nn.Module,
) -> torch.Tensor:
    padded = pad_same(x, weight.shape[-2:], conv.stride, conv.dilation)
    return _conv2d_activation(conv, padded, weight, bias, activation)


# each known convolution's call, and the same call also applying the activation after it
_ACTIVATION_CALLS: dict[ConvCall, ActivationCall] = {
    _conv2d: _conv2d_activation,
    same_padded_conv: _same_padded_conv_activation,
}


def _fused_activation(
    conv: nn.Module, norm: nn.Module, call: ConvCall, tail: NormTail
) -> ActivationCall | None:
    """How the folded `conv` (run by `call`) also applies `norm`'s activation in one call,
    where the norm is a norm + activation layer (timm's BatchNormAct2d: `tail` is `_act_tail`)
    whose activation follows the norm directly (no dropout) and has a oneDNN post-op, and
    `conv` is a dense one (a depthwise one runs its own timed ways: sft.models.depthwise_conv);
    else None."""
    if tail is not _act_tail or type(norm.drop) is not nn.Identity:
        return None
    if post_op(norm.act) is None or conv.groups != 1:
        return None
    # Conv2dSame pads on its own; nn.Conv2d's padding is the fused op's only with zeros
    if call is _conv2d and (conv.padding_mode != "zeros" or isinstance(conv.padding, str)):
        return None
    return _ACTIVATION_CALLS[call]


def _known_layers() -> tuple[dict[type, ConvCall], dict[type, NormTail]]:
    """Exact layer types whose forward is known: a subclass may do more than its base."""
    convs: dict[type, ConvCall] = {nn.Conv2d: _conv2d}
    norms: dict[type, NormTail] = {nn.BatchNorm2d: _no_tail}
    try:
        from timm.layers import BatchNormAct2d, Conv2dSame
    except ImportError:  # without timm (sft[vision]) its layers cannot be in the model
        return convs, norms
    convs[Conv2dSame] = same_padded_conv
    norms[BatchNormAct2d] = _act_tail
    return convs, norms


def _folded_conv(
    conv: nn.Conv2d,
    norm: nn.modules.batchnorm._BatchNorm,
    owner: tuple[nn.Module, str],
    call: ConvCall,
    activation_call: ActivationCall | None,
    x: torch.Tensor,
) -> torch.Tensor:
    """`conv` with `norm` folded in while the norm is frozen, and the norm's activation too
    with an `activation_call` (the norm's forward then passes its input on)."""
    parent, name = owner
    # a norm replaced since (Lightning's sync_batchnorm converts them for DDP) does its own work
    if norm.training or parent._modules.get(name) is not norm:
        return call(conv, x, conv.weight, conv.bias)
    scale = torch.rsqrt(norm.running_var + norm.eps)
    if norm.weight is not None:  # affine=False: no gamma, no beta
        scale = norm.weight * scale
    bias = -norm.running_mean * scale
    if norm.bias is not None:
        bias = bias + norm.bias
    if conv.bias is not None:
        bias = bias + conv.bias * scale
    weight = conv.weight * scale.reshape(-1, 1, 1, 1)
    if activation_call is not None:
        return activation_call(conv, x, weight, bias, norm.act)
    return call(conv, x, weight, bias)


def _folded_norm(norm: nn.modules.batchnorm._BatchNorm, tail: NormTail, x: torch.Tensor):
    if norm.training:
        return type(norm).forward(norm, x)
    return tail(norm, x)  # normalised by the convolution already


def freeze_norm_statistics(model: nn.Module) -> None:
    """Every batch norm of `model` in eval mode: it normalises with its running statistics and
    keeps them, while its affine weights can still train (`model.freeze_norm_stats`)."""
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.eval()


def _frozen_statistics_mode(model: nn.Module) -> None:
    """Training mode with every batch norm in eval, as freeze_norm_stats sets it: layers that
    act only in training (dropout, drop path) act, so what they change is not a conv output."""
    model.train()
    freeze_norm_statistics(model)


def _pairs(model: nn.Module, example: torch.Tensor) -> list[tuple[nn.Module, nn.Module]]:
    """(conv, norm) pairs of known types where the norm takes the conv's output unchanged,
    found by running `example` through `model` (any architecture, no tracing)."""
    convs, norms = _known_layers()
    # (output, its version counter then, conv): the outputs are kept alive, so that no later
    # tensor can take the id of one
    produced: list[tuple[torch.Tensor, int, nn.Module]] = []
    pairs: list[tuple[nn.Module, nn.Module]] = []

    def after_conv(conv: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        produced.append((output, output._version, conv))

    def before_norm(norm: nn.Module, inputs: tuple) -> None:
        for output, version, conv in produced:
            # changed in place on the way (a += after the conv): not the conv's output any more
            unchanged = inputs[0] is output and output._version == version
            if unchanged and all(conv is not c for c, _ in pairs):
                pairs.append((conv, norm))

    hooks = [m.register_forward_hook(after_conv) for m in model.modules() if type(m) in convs]
    # without running statistics a norm uses the batch's in eval mode too: nothing to fold
    hooks += [
        m.register_forward_pre_hook(before_norm)
        for m in model.modules()
        if type(m) in norms and m.running_var is not None
    ]
    try:
        _seeded_forward(model, example)
    finally:
        for hook in hooks:
            hook.remove()
    return pairs


def _seeded_forward(model: nn.Module, example: torch.Tensor) -> torch.Tensor:
    """The same dropout draws on every call, and the caller's random state left as it was."""
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        torch.manual_seed(0)
        return model(example)


def _install(model: nn.Module, pairs: list[tuple[nn.Module, nn.Module]]) -> None:
    convs, norms = _known_layers()
    owners = {
        child: (parent, name)
        for parent in model.modules()
        for name, child in parent.named_children()
    }
    for conv, norm in pairs:
        # instance attributes: partials of module functions, so that the model still copies
        # and pickles, and its modules keep their types
        call, tail = convs[type(conv)], norms[type(norm)]
        activation_call = _fused_activation(conv, norm, call, tail)
        conv.forward = functools.partial(
            _folded_conv, conv, norm, owners[norm], call, activation_call
        )
        norm.forward = functools.partial(
            _folded_norm, norm, _no_tail if activation_call is not None else tail
        )


def folded_activations(model: nn.Module) -> int:
    """How many of `model`'s folded convolutions also apply their norm's activation."""
    forwards = (vars(module).get("forward") for module in model.modules())
    return sum(
        getattr(forward, "func", None) is _folded_conv and forward.args[4] is not None
        for forward in forwards
    )


def _unfold(model: nn.Module) -> None:
    for module in model.modules():
        forward = vars(module).get("forward")
        if getattr(forward, "func", None) in (_folded_conv, _folded_norm):
            del module.forward


def _folding_computes_the_same(model: nn.Module, example: torch.Tensor) -> bool:
    """The folded `model` against itself unfolded, in eval mode and with frozen statistics while
    training, on a copy whose norms have random statistics and affine weights: fresh norms are
    close to the identity, which would hide a wrong pair."""
    folded = copy.deepcopy(model)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for norm in folded.modules():
            if isinstance(norm, nn.modules.batchnorm._BatchNorm):
                for tensor, low, high in (
                    (norm.running_mean, -1.0, 1.0),
                    (norm.running_var, 0.5, 2.0),
                    (norm.weight, 0.5, 1.5),
                    (norm.bias, -0.5, 0.5),
                ):
                    if tensor is not None:
                        random = torch.rand(tensor.shape, generator=generator)
                        tensor.copy_(low + (high - low) * random)
    plain = copy.deepcopy(folded)
    _unfold(plain)
    for set_mode in (nn.Module.eval, _frozen_statistics_mode):
        set_mode(plain), set_mode(folded)
        want, got = _seeded_forward(plain, example), _seeded_forward(folded, example)
        if not torch.allclose(got, want, rtol=1e-4, atol=1e-4 * float(want.abs().max())):
            return False
    return True


def fold_frozen_norms(model: nn.Module, example: torch.Tensor) -> int:
    """Fold every batch norm of `model` that takes a convolution's output into it, for the
    calls where the norm is in eval mode. Checked on `example`: where the folded model would not
    compute what the model does (an output also used past its norm), nothing is folded.
    Returns the number of norms folded; the state_dict and module tree stay as they were."""
    modes = {m: m.training for m in model.modules()}
    _frozen_statistics_mode(model)
    try:
        pairs = _pairs(model, example)
    # e.g. a backbone for other input sizes or channels (timm's fixed-size models assert)
    except (RuntimeError, ValueError, AssertionError) as err:
        log.info(
            f"batch norms not folded: the backbone did not run on {tuple(example.shape)}: {first_line(err)}"
        )
        return 0
    finally:
        for module, training in modes.items():
            module.training = training
    if not pairs:
        return 0
    _install(model, pairs)
    try:
        same = _folding_computes_the_same(model, example)
    except (RuntimeError, ValueError, TypeError, AttributeError) as err:  # e.g. a dict output
        log.info(
            f"batch norms not folded: cannot compare the backbone's outputs: {first_line(err)}"
        )
        same = False
    if not same:
        _unfold(model)
        log.info("batch norms not folded: the folded backbone computed something else")
        return 0
    return len(pairs)
