"""FullGrad (Srinivas & Fleuret, NeurIPS 2019), as pytorch-grad-cam and the official code compute it:

``M = sum_c psi(|x_c * ds/dx_c|) + sum_l sum_k upsample(psi(|b_lk * ds/dz_lk|))``

over the input's channels ``c`` and every convolution and batch norm ``l`` with a bias, ``z_l`` its output,
``b_l`` its bias (a batch norm's effective bias ``beta - mu gamma / sqrt(var + eps)``), where
``psi(v) = (v - min v) / (max(v - min v) + 1e-7)`` scales each map (the guard is the peers': a channel of
tiny gradients stays small). A whole-model method: the target layer plays no part, and the raw map is at
the input's resolution. The channel sum is taken before upsampling (bilinear upsampling is linear), so one
map per layer is upsampled, not one per channel.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from ..capture import model_output_logits
from ..errors import HeadError
from ..maps import upsample
from .base import MapMethod, MethodInputs, MethodResult, Need

_BIASED = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


def _scaled(values: Tensor) -> Tensor:
    """``psi`` per map over the trailing spatial dimensions of ``values`` (N, ...)."""
    flat = values.flatten(1)
    shifted = flat - flat.min(dim=1, keepdim=True).values
    return (shifted / (shifted.max(dim=1, keepdim=True).values + 1e-7)).view_as(values)


def _bias(module: nn.Module) -> Tensor:
    if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.running_mean is not None:
        assert module.running_var is not None
        weight = module.weight if module.weight is not None else torch.ones_like(module.running_mean)
        shift = module.bias if module.bias is not None else torch.zeros_like(module.running_mean)
        return (shift - module.running_mean * weight / torch.sqrt(module.running_var + module.eps)).detach()
    bias = module.bias
    assert isinstance(bias, Tensor)
    return bias.detach()


class FullGrad(MapMethod):
    name = "full-grad"
    needs = frozenset({Need.MODEL})

    def compute(self, inputs: MethodInputs) -> MethodResult:
        images, model = inputs.require("images"), inputs.model
        assert model is not None
        layers = [m for m in model.modules() if type(m) in _BIASED and getattr(m, "bias", None) is not None]
        outputs: list[tuple[nn.Module, Tensor]] = []

        def keep(module: nn.Module, _args: Any, output: Any) -> Any:
            if isinstance(output, Tensor) and output.dim() == images.dim() and output.requires_grad:
                outputs.append((module, output))
                # the model goes on with a copy: an in-place ReLU after a batch norm must not turn z_l into
                # ReLU(z_l), whose gradient is not ds/dz_l
                return output.clone()
            return None

        handles = [m.register_forward_hook(keep) for m in layers]
        try:
            x = images.detach().requires_grad_(True)
            with torch.enable_grad():
                logits = model_output_logits(model(x))
                if inputs.score_function is not None:  # bound to this batch: a function, or a region
                    scores = inputs.score_function(logits)
                else:
                    scores = logits.gather(1, inputs.targets[:, None])[:, 0]
                gradients = torch.autograd.grad(scores.sum(), [x, *(o for _, o in outputs)], allow_unused=True)
        finally:
            for handle in handles:
                handle.remove()
        if gradients[0] is None:
            raise HeadError("the explained score does not depend on the input")
        size = images.shape[2:]
        b = images.shape[0]
        total = _scaled((x.detach() * gradients[0]).abs().flatten(0, 1)).view_as(images).sum(dim=1)
        for (module, _), gradient in zip(outputs, gradients[1:], strict=True):
            if gradient is None:  # a layer after the explained output (an auxiliary head)
                continue
            shape = (1, -1, *([1] * (gradient.dim() - 2)))
            terms = (_bias(module).view(shape) * gradient).abs()
            total = total + upsample(_scaled(terms.flatten(0, 1)).view_as(terms).sum(dim=1), size)
        return MethodResult(total.view(b, *size), None)
