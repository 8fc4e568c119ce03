"""Deraining networks: RCDNet, a fast residual CNN, and an exactly C4-equivariant baseline.

All three are ``torch.nn.Module`` + ``huggingface_hub.PyTorchModelHubMixin`` models with flat,
JSON-able constructor arguments, so ``save_pretrained(folder)`` writes ``config.json`` +
``model.safetensors`` and ``Model.from_pretrained(folder)`` rebuilds them offline.

Each model maps a rainy RGB image ``[B, 3, H, W]`` to the derained image of the same size and
offers ``eqreg_layers(group_order)``: the module names EQ-Reg taps by default (the outputs of
the convolutions of the main blocks, before any activation, as in Bai et al., CVPR 2025).
Every convolution has stride 1 and "same" padding, so a 90° rotation of the input rotates every
feature map exactly (no grid misalignment for any H, W, odd or even, square or not).
"""

from __future__ import annotations

from typing import Any

import torch
from huggingface_hub import PyTorchModelHubMixin
from torch import nn
from torch.nn import functional as F

from eqreg_hf.core.groups import check_regular_channels
from eqreg_hf.core.paper import PAPER_URL

_HUB_KW = dict(
    library_name="eqreg-hf", paper_url=PAPER_URL, pipeline_tag="image-to-image", license="apache-2.0"
)


class ResBlock(nn.Module):
    """``x + conv2(relu(conv1(x)))`` (optionally with BatchNorm after each conv).

    The ReLU is not in-place on purpose: EQ-Reg captures ``conv1``'s output with a forward hook
    and an in-place activation would overwrite the captured tensor.
    """

    def __init__(
        self, channels: int, kernel_size: int = 3, batch_norm: bool = False, final_relu: bool = False
    ):
        super().__init__()
        pad = kernel_size // 2
        self.conv1 = nn.Conv2d(channels, channels, kernel_size, padding=pad, bias=not batch_norm)
        self.conv2 = nn.Conv2d(channels, channels, kernel_size, padding=pad, bias=not batch_norm)
        self.bn1 = nn.BatchNorm2d(channels) if batch_norm else nn.Identity()
        self.bn2 = nn.BatchNorm2d(channels) if batch_norm else nn.Identity()
        if batch_norm:
            # Residual branch starts at zero ("zero-init the last BN"): every proximal net starts
            # as the identity, so RCDNet's first background estimate is the input, not noise.
            nn.init.zeros_(self.bn2.weight)
        self.final_relu = final_relu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        y = x + y
        return F.relu(y) if self.final_relu else y


# --------------------------------------------------------------------------------------------
# FastDerainer
# --------------------------------------------------------------------------------------------


class FastDerainer(
    nn.Module, PyTorchModelHubMixin, tags=["deraining", "eqreg", "image-restoration"], **_HUB_KW
):
    """A small residual CNN derainer for CPU demos: ``B = O - tail(body(head(O)))``.

    head conv (3 -> C), ``num_blocks`` residual blocks ``x + conv2(relu(conv1(x)))``, tail conv
    (C -> 3) predicting the rain layer, subtracted from the input (global residual, the usual
    rain model O = B + R). With the defaults (C = 32, 6 blocks) it has about 113k parameters.

    Args:
        channels: feature channels C (default 32; keep it divisible by the group order you use,
            32 works for t = 2, 4, 8).
        num_blocks: residual blocks (default 6).
        kernel_size: odd kernel size of every conv (default 3).
        in_channels: image channels (default 3).

    Example:
        >>> net = FastDerainer(channels=8, num_blocks=2)
        >>> net(torch.rand(1, 3, 17, 23)).shape
        torch.Size([1, 3, 17, 23])
        >>> net.eqreg_layers(4)[:2]
        ['body.0.conv1', 'body.0.conv2']
    """

    def __init__(self, channels: int = 32, num_blocks: int = 6, kernel_size: int = 3, in_channels: int = 3):
        super().__init__()
        if kernel_size % 2 != 1:
            raise ValueError(
                f"kernel_size={kernel_size} must be odd so that 'same' padding keeps rotations aligned."
            )
        pad = kernel_size // 2
        self.head = nn.Conv2d(in_channels, channels, kernel_size, padding=pad)
        self.body = nn.ModuleList([ResBlock(channels, kernel_size) for _ in range(num_blocks)])
        self.tail = nn.Conv2d(channels, in_channels, kernel_size, padding=pad)
        self.channels = channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = F.relu(self.head(x))
        for block in self.body:
            f = block(f)
        return x - self.tail(f)

    def eqreg_layers(self, group_order: int = 4) -> list[str]:
        """Default EQ-Reg taps: both convolutions of every residual block (outputs before ReLU)."""
        check_regular_channels(
            "body.*",
            self.channels,
            group_order,
            hint=f"Or build FastDerainer with channels={self.channels} changed to a multiple of "
            f"{group_order} (e.g. channels=32).",
        )
        return [f"body.{i}.conv{j}" for i in range(len(self.body)) for j in (1, 2)]


# --------------------------------------------------------------------------------------------
# RCDNet
# --------------------------------------------------------------------------------------------


class ProxNet(nn.Module):
    """A learned proximal operator: ``num_resblocks`` residual blocks on a ``channels``-map."""

    def __init__(self, channels: int, num_resblocks: int, batch_norm: bool):
        super().__init__()
        self.blocks = nn.ModuleList(
            [ResBlock(channels, 3, batch_norm=batch_norm, final_relu=True) for _ in range(num_resblocks)]
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return x


class RCDNet(
    nn.Module, PyTorchModelHubMixin, tags=["deraining", "eqreg", "rcdnet", "image-restoration"], **_HUB_KW
):
    """RCDNet, the rain convolutional dictionary network (Wang et al., CVPR 2020).

    Written from the paper's description ("A Model-driven Deep Neural Network for Single Image
    Rain Removal"). The rainy image is modelled as ``O = B + Σ_n C_n ⊛ M_n``: a background ``B``
    plus rain maps ``M_n`` convolved with a learned dictionary of rain kernels ``C``
    (``num_maps`` kernels of ``kernel_size``²). Each of the ``num_stages`` stages unrolls one step
    of proximal gradient descent on ``||O - B - C ⊛ M||²``:

        M-net:  M ← prox_M( M - η_M · Cᵀ ⊛ᵀ (C ⊛ M - (O - B)) )
        B-net:  B̂ = (1 - η_B) · B + η_B · (O - C ⊛ M)
                [B, Z] ← prox_B( [B̂, Z] )

    with learned step sizes ``η_M, η_B`` per stage and learned proximal networks (residual
    blocks). ``Z`` carries ``num_features`` auxiliary feature channels along the B-net, so the
    B-net works on ``3 + num_features`` channels. The initial ``B`` and ``Z`` come from a conv of
    the input and a first B-net; the initial ``M`` from a soft-threshold of ``C₀ᵀ ⊛ᵀ (O - B₀)``.

    EQ-Reg (Bai et al. 2025) taps the B-net convolutions and widens them so their channel count
    divides by t: ``num_features=33`` gives 36 = 3 + 33 channels for t = 4 (the default here).

    Args:
        num_stages: unrolled stages S (paper: 17; default 17).
        num_maps: rain maps / dictionary kernels N (paper: 32).
        kernel_size: size of the rain kernels (paper: 9).
        num_features: auxiliary feature channels of the B-net (default 33, so 3 + 33 = 36).
        num_resblocks: residual blocks per proximal net (paper: 4).
        batch_norm: BatchNorm inside the proximal nets, as in the paper (default True).
        in_channels: image channels (default 3).

    Example:
        >>> net = RCDNet(num_stages=2, num_maps=4, kernel_size=3, num_features=5, num_resblocks=1)
        >>> net(torch.rand(2, 3, 15, 20)).shape
        torch.Size([2, 3, 15, 20])
        >>> net.eqreg_layers(4)[:2]
        ['bnets.0.blocks.0.conv1', 'bnets.0.blocks.0.conv2']
    """

    def __init__(
        self,
        num_stages: int = 17,
        num_maps: int = 32,
        kernel_size: int = 9,
        num_features: int = 33,
        num_resblocks: int = 4,
        batch_norm: bool = True,
        in_channels: int = 3,
    ):
        super().__init__()
        if num_stages < 1:
            raise ValueError(f"num_stages={num_stages} must be >= 1.")
        if kernel_size % 2 != 1:
            raise ValueError(
                f"kernel_size={kernel_size} must be odd so that 'same' padding keeps rotations aligned."
            )
        self.num_stages = num_stages
        self.in_channels = in_channels
        self.bchannels = in_channels + num_features
        self.pad = kernel_size // 2
        # The rain-kernel dictionary C: a conv from N rain maps to the RGB rain layer. C0 is the
        # (separately learned) dictionary used to initialise M, as in the paper.
        self.rain_kernels = nn.Parameter(
            torch.randn(in_channels, num_maps, kernel_size, kernel_size) / kernel_size**2 / num_maps**0.5
        )
        self.rain_kernels0 = nn.Parameter(self.rain_kernels.detach().clone())
        self.tau = nn.Parameter(torch.full((1, num_maps, 1, 1), 0.5))  # soft threshold of M's initialisation
        self.eta_m = nn.Parameter(torch.full((num_stages,), 1.0))
        self.eta_b = nn.Parameter(torch.full((num_stages,), 0.8))
        # Training only: forward returns every stage (see rcdnet_stage_loss); evaluation always gets B_S.
        self.stage_outputs = False
        self.feat0 = nn.Conv2d(in_channels, num_features, 3, padding=1)
        self.bnet0 = ProxNet(self.bchannels, num_resblocks, batch_norm)
        self.mnets = nn.ModuleList([ProxNet(num_maps, num_resblocks, batch_norm) for _ in range(num_stages)])
        self.bnets = nn.ModuleList(
            [ProxNet(self.bchannels, num_resblocks, batch_norm) for _ in range(num_stages)]
        )

    def _synthesise(self, m: torch.Tensor, kernels: torch.Tensor) -> torch.Tensor:
        """The rain layer ``C ⊛ M``."""
        return F.conv2d(m, kernels, padding=self.pad)

    def _adjoint(self, r: torch.Tensor, kernels: torch.Tensor) -> torch.Tensor:
        """``Cᵀ ⊛ᵀ R``, the adjoint of :meth:`_synthesise` (same-size output for stride 1)."""
        return F.conv_transpose2d(r, kernels, padding=self.pad)

    def forward_stages(self, x: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """All stages: ``(backgrounds, rain_layers)``, lists of S + 1 and S tensors ``[B, 3, H, W]``.

        RCDNet is trained with a loss on every stage's background and rain layer; :meth:`forward`
        returns only the last background.
        """
        c = self.in_channels
        bz = self.bnet0(torch.cat([x, self.feat0(x)], dim=1))
        b, z = bz[:, :c], bz[:, c:]
        m = F.relu(self._adjoint(x - b, self.rain_kernels0) - self.tau)
        backgrounds, rains = [b], []
        for s in range(self.num_stages):
            grad_m = self._adjoint(self._synthesise(m, self.rain_kernels) - (x - b), self.rain_kernels)
            m = self.mnets[s](m - self.eta_m[s] * grad_m)
            rain = self._synthesise(m, self.rain_kernels)
            b_hat = (1 - self.eta_b[s]) * b + self.eta_b[s] * (x - rain)
            bz = self.bnets[s](torch.cat([b_hat, z], dim=1))
            b, z = bz[:, :c], bz[:, c:]
            backgrounds.append(b)
            rains.append(rain)
        return backgrounds, rains

    def forward(self, x: torch.Tensor) -> torch.Tensor | dict[str, torch.Tensor]:
        backgrounds, rains = self.forward_stages(x)
        if self.training and self.stage_outputs:  # for rcdnet_stage_loss (train_derainer(stage_loss=True))
            return {
                "background": backgrounds[-1],
                "backgrounds": torch.stack(backgrounds, dim=1),
                "rains": torch.stack(rains, dim=1),
                "rainy": x,
            }
        return backgrounds[-1]

    def eqreg_layers(self, group_order: int = 4) -> list[str]:
        """Default EQ-Reg taps: every convolution of every stage's B-net (as in the EQ-Reg paper)."""
        check_regular_channels(
            "bnets.*",
            self.bchannels,
            group_order,
            hint=f"Or set num_features so that 3 + num_features={self.bchannels} divides by {group_order} "
            "(num_features=33 for t = 4, as in the paper).",
        )
        return [
            f"bnets.{s}.blocks.{j}.conv{k}"
            for s in range(self.num_stages)
            for j in range(len(self.bnets[s].blocks))
            for k in (1, 2)
        ]


# --------------------------------------------------------------------------------------------
# StrictC4Derainer (e2cnn)
# --------------------------------------------------------------------------------------------


class StrictC4Derainer(
    nn.Module, PyTorchModelHubMixin, tags=["deraining", "equivariant", "e2cnn"], **_HUB_KW
):
    """An exactly C4-equivariant residual derainer built with e2cnn (the hard-constraint baseline).

    Same layout as :class:`FastDerainer` (head, residual blocks, tail, ``B = O - rain``) but every
    conv is an e2cnn ``R2Conv`` between C4 fields: the RGB input and output are trivial fields,
    the hidden features ``num_fields`` regular fields (4 channels each). Rotating the input by
    90° rotates the output exactly (up to float error). A C4-steerable 3×3 conv has about 1/6 of
    the free parameters of a plain conv of the same width, so the defaults (24 fields = 96
    channels, 4 blocks) match FastDerainer's default budget (~115k) at higher compute.

    Needs e2cnn (``pip install e2cnn``). ``forward`` takes and returns plain tensors.

    Args:
        num_fields: regular C4 fields in the hidden layers (channels = 4 * num_fields).
        num_blocks: residual blocks (default 4).
        in_channels: image channels (trivial fields; default 3).

    Example:
        >>> net = StrictC4Derainer(num_fields=2, num_blocks=1)
        >>> x = torch.rand(1, 3, 9, 13)
        >>> torch.allclose(net(x.rot90(1, (2, 3))), net(x).rot90(1, (2, 3)), atol=1e-5)
        True
    """

    def __init__(self, num_fields: int = 24, num_blocks: int = 4, in_channels: int = 3):
        super().__init__()
        try:
            from e2cnn import gspaces
            from e2cnn import nn as enn
        except ImportError as err:  # optional dependency
            raise ImportError("StrictC4Derainer needs e2cnn: `pip install e2cnn`.") from err
        self._enn = enn
        gspace = gspaces.Rot2dOnR2(N=4)
        self.in_type = enn.FieldType(gspace, in_channels * [gspace.trivial_repr])
        hidden = enn.FieldType(gspace, num_fields * [gspace.regular_repr])
        self.head = enn.R2Conv(self.in_type, hidden, 3, padding=1)
        self.head_act = enn.ReLU(hidden)
        self.body = nn.ModuleList()
        for _ in range(num_blocks):
            self.body.append(
                nn.ModuleDict(
                    {
                        "conv1": enn.R2Conv(hidden, hidden, 3, padding=1),
                        "act": enn.ReLU(hidden),
                        "conv2": enn.R2Conv(hidden, hidden, 3, padding=1),
                        # Plain-tensor views of the conv outputs: forward hooks (EQ-Reg taps,
                        # equivariance_error) see torch tensors here, not e2cnn GeometricTensors.
                        "feat1": nn.Identity(),
                        "feat2": nn.Identity(),
                    }
                )
            )
        self.tail = enn.R2Conv(hidden, self.in_type, 3, padding=1)
        with torch.no_grad():
            # e2cnn's He init makes the residual sum grow with depth; start close to identity, as
            # FastDerainer does (a small predicted rain layer), so training starts from B ≈ O.
            self.tail.weights.mul_(0.1)
            for block in self.body:
                block["conv2"].weights.mul_(0.1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gt = self._enn.GeometricTensor
        f = self.head_act(self.head(gt(x, self.in_type)))
        for block in self.body:
            g = block["conv1"](f)
            g = gt(block["feat1"](g.tensor), g.type)
            g = block["conv2"](block["act"](g))
            f = f + gt(block["feat2"](g.tensor), g.type)
        return x - self.tail(f).tensor

    def eqreg_layers(self, group_order: int = 4) -> list[str]:
        """Plain-tensor views of the body convolutions' outputs (``body.i.feat1/2``; error 0 by construction).

        The e2cnn convs themselves return ``GeometricTensor``s, which hooks cannot compare; the
        ``feat`` identities carry the same values as torch tensors, channels field-major (C4
        regular fields, 4 channels each), the layout the EQ-Reg convention uses.
        """
        if group_order != 4:
            # A C4 field read as two C2 fields of 2 channels would be wrong, not just loose: the 180° turn
            # moves channel r to r + 2 (across the two halves), the C2 convention swaps inside each half.
            raise ValueError(
                f"StrictC4Derainer holds C4 regular fields (4 channels each), so its taps can be measured "
                f"or regularised under C4 only, not under a group whose regular field has {group_order} "
                "channels (C2: 2, D4: 8). Use group 'C4' (for the 180° turn alone: "
                "equivariance_error(..., group_order=4, ks=[2]))."
            )
        return [f"body.{i}.feat{j}" for i in range(len(self.body)) for j in (1, 2)]


MODELS = {"fast": FastDerainer, "rcdnet": RCDNet, "strict-c4": StrictC4Derainer}


def rcdnet_stage_loss(
    outputs: dict[str, torch.Tensor], clean: torch.Tensor, intermediate: float = 0.1
) -> torch.Tensor:
    """RCDNet's training loss (Wang et al., CVPR 2020): MSE on every stage's background and rain layer.

    ``Σ_s λ_s ||B_s − B||² + Σ_s γ_s ||R_s − (O − B)||²`` with weight 1 on the last stage and
    ``intermediate`` (0.1, as in the paper) on the others; ``outputs`` is what an
    :class:`RCDNet` with ``stage_outputs = True`` returns in training mode.

    Example:
        >>> net = RCDNet(num_stages=2, num_maps=4, kernel_size=3, num_features=1, num_resblocks=1).train()
        >>> net.stage_outputs = True
        >>> x, y = torch.rand(2, 3, 8, 8), torch.rand(2, 3, 8, 8)
        >>> rcdnet_stage_loss(net(x), y).dim()
        0
    """
    if not isinstance(outputs, dict) or "backgrounds" not in outputs:
        raise TypeError(
            "rcdnet_stage_loss needs the per-stage outputs: set model.stage_outputs = True "
            "(train_derainer does this with stage_loss=True) and call the model in training mode."
        )
    rain_target = outputs["rainy"] - clean

    def weighted(stages: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        n = stages.shape[1]
        per_stage = (stages.float() - target.float().unsqueeze(1)).pow(2).mean(dim=(0, 2, 3, 4))  # [n]
        weights = torch.full((n,), intermediate, device=per_stage.device)
        weights[-1] = 1.0
        return (weights * per_stage).sum()

    return weighted(outputs["backgrounds"], clean) + weighted(outputs["rains"], rain_target)


def build_derainer(name: str = "fast", **kwargs: Any) -> nn.Module:
    """A deraining network by name: "fast" (FastDerainer), "rcdnet" (RCDNet) or "strict-c4".

    Example:
        >>> build_derainer("fast", channels=8, num_blocks=1).__class__.__name__
        'FastDerainer'
    """
    if name not in MODELS:
        raise ValueError(f"Unknown derainer {name!r}. Choose between {sorted(MODELS)}.")
    return MODELS[name](**kwargs)
