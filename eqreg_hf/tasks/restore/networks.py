"""Restoration networks: a DnCNN-style residual CNN and its strictly C4 / D4-equivariant twin (plain torch).

Both are ``torch.nn.Module`` + ``huggingface_hub.PyTorchModelHubMixin`` models with flat, JSON-able
constructor arguments (``save_pretrained`` / ``from_pretrained`` work offline), map a degraded RGB image
``[B, 3, h, w]`` to the restored image ``[B, 3, scale*h, scale*w]`` and name their EQ-Reg taps with
``eqreg_layers(group)``: the outputs of the hidden convolutions ``head`` and ``body.i`` (before the ReLU).

Super-resolution (``scale > 1``) upsamples the input bicubically first and then predicts a residual on the
upsampled image. Bicubic interpolation by an integer factor is symmetric under 90° turns and mirror images,
so the whole network keeps the group structure; pixel shuffle would not (its sub-pixel channels are not
permuted by a rotation the way regular fields are).

Every convolution has stride 1 and "same" padding, so turning or flipping the input turns or flips every
feature map exactly, for any H, W (square or not).
"""

from __future__ import annotations

import torch
from huggingface_hub import PyTorchModelHubMixin
from torch import nn
from torch.nn import functional as F

from eqreg_hf.core.groups import Group, as_group, check_regular_channels, compose, rotate_image
from eqreg_hf.core.paper import PAPER_URL
from eqreg_hf.data.restore import RESTORE_TASKS

__all__ = ["DnCNN", "StrictRestorer", "GroupConv2d", "build_restorer", "RESTORER_CHOICES", "STRICT_GROUPS"]

_HUB_KW = dict(
    library_name="eqreg-hf", paper_url=PAPER_URL, pipeline_tag="image-to-image", license="apache-2.0"
)
_TAGS = ["image-restoration", "denoising", "inpainting", "super-resolution", "eqreg"]

RESTORER_CHOICES = ("dncnn", "strict-c4", "strict-d4")
STRICT_GROUPS = (
    "C4",
    "D4",
)  # the groups StrictRestorer is built for (exact quarter turns, and mirror images)


def _check_shape(
    in_channels: int, channels: int, depth: int, kernel_size: int, scale: int, what: str
) -> None:
    """One-line errors for the architecture arguments both networks share."""
    for name, value, low in (
        ("in_channels", in_channels, 1),
        (what, channels, 1),
        ("depth", depth, 2),
        ("scale", scale, 1),
    ):
        if not isinstance(value, int) or isinstance(value, bool) or value < low:
            raise ValueError(f"{name}={value!r} must be an integer >= {low}.")
    if not isinstance(kernel_size, int) or kernel_size < 1 or kernel_size % 2 != 1:
        raise ValueError(
            f"kernel_size={kernel_size!r} must be an odd positive integer so that 'same' padding keeps "
            "rotations aligned (e.g. 3)."
        )


def _upsample(x: torch.Tensor, scale: int) -> torch.Tensor:
    """Bicubic upsampling by the integer ``scale`` (identity for 1); symmetric under turns and flips."""
    return x if scale == 1 else F.interpolate(x, scale_factor=scale, mode="bicubic", align_corners=False)


def _tap_names(depth: int) -> list[str]:
    return ["head"] + [f"body.{i}" for i in range(depth - 2)]


class _ResidualChain(nn.Module):
    """``x + tail(relu(body(relu(head(x)))))`` on the upsampled input: the forward both networks share."""

    head: nn.Module
    body: nn.ModuleList
    tail: nn.Module
    scale: int

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = _upsample(x, self.scale)
        f = F.relu(self.head(x))
        for conv in self.body:
            f = F.relu(conv(f))
        return x + self.tail(f)


# --------------------------------------------------------------------------------------------
# DnCNN
# --------------------------------------------------------------------------------------------


class DnCNN(_ResidualChain, PyTorchModelHubMixin, tags=_TAGS + ["dncnn"], **_HUB_KW):
    """A DnCNN-style restorer (Zhang et al., 2017), no batch norm: ``y + tail(relu(body(relu(head(y)))))``.

    ``depth`` convolutions in all: head (in_channels -> C) + ReLU, ``depth - 2`` times (C -> C) + ReLU, tail
    (C -> in_channels) predicting the residual, added to the (bicubically upsampled, for ``scale > 1``) input.
    The tail starts with small weights, so training starts near the identity. With the defaults
    (C = 32, depth = 6) it has 38,755 parameters.

    Args:
        in_channels: image channels (default 3).
        channels: hidden channels C (default 32; keep it divisible by the regular field size you regularise
            with: t for C_t, 2t for D_t, so 32 serves C2, C4, C8, D4).
        depth: convolutions in total, >= 2 (default 6).
        kernel_size: odd kernel size (default 3).
        scale: integer upsampling factor (1 for denoising / inpainting, 2-4 for super-resolution).

    Example:
        >>> net = DnCNN(channels=8, depth=3)
        >>> sr = DnCNN(channels=8, depth=3, scale=2)
        >>> net(torch.rand(1, 3, 9, 14)).shape, sr(torch.rand(1, 3, 9, 14)).shape
        (torch.Size([1, 3, 9, 14]), torch.Size([1, 3, 18, 28]))
        >>> net.eqreg_layers("D4")
        ['head', 'body.0']
    """

    def __init__(
        self, in_channels: int = 3, channels: int = 32, depth: int = 6, kernel_size: int = 3, scale: int = 1
    ):
        super().__init__()
        _check_shape(in_channels, channels, depth, kernel_size, scale, "channels")
        pad = kernel_size // 2
        self.channels, self.scale = channels, scale
        self.head = nn.Conv2d(in_channels, channels, kernel_size, padding=pad)
        self.body = nn.ModuleList(
            [nn.Conv2d(channels, channels, kernel_size, padding=pad) for _ in range(depth - 2)]
        )
        self.tail = nn.Conv2d(channels, in_channels, kernel_size, padding=pad)
        with torch.no_grad():
            self.tail.weight.mul_(0.1)  # a small residual at first: the network starts near the identity

    def eqreg_layers(self, group: int | str | Group = 4) -> list[str]:
        """Default EQ-Reg taps: every hidden convolution's output (before its ReLU), ``head`` and ``body.i``.

        ``group``: the channels of one regular field (an int t, as ``layers="auto"`` passes it: t for C_t,
        2t for D_t) or a group name such as ``"D4"``. Refused when C does not divide by the field size.
        """
        check_regular_channels(
            "head/body.*",
            self.channels,
            group,
            hint=f"Or build DnCNN with channels={self.channels} changed to a multiple of "
            f"{as_group(group).size if isinstance(group, (str, Group)) else group} "
            "(e.g. channels=32).",
        )
        return _tap_names(len(self.body) + 2)


# --------------------------------------------------------------------------------------------
# Group convolution (plain torch)
# --------------------------------------------------------------------------------------------


def _inverse(g, group: Group):
    if isinstance(g, tuple):
        return type(g)(g[0], g[1] if g[0] else (-g[1]) % group.t)
    return (-g) % group.t


def _index(g, group: Group) -> int:
    """The element's index ``f * t + k``, which is also its channel inside a regular field."""
    return g[0] * group.t + g[1] if isinstance(g, tuple) else g


def _expansion_index(group: Group, kernel_size: int, lift: bool, project: bool) -> torch.Tensor:
    """``[n_out, n_in, k*k]``: where each entry of the full conv weight is read from the flat parameter.

    With ``R_h`` the spatial map of h on a kernel, the weight from input channel (j, h') to output channel
    (i, h) is ``R_h psi_ij(h^-1 h')`` (regular -> regular), ``R_h psi_ic`` (lifting: trivial -> regular) and
    ``R_h' phi_cj`` (projection: regular -> trivial). These are the equivariant maps for the action
    ``T_g f(h, x) = f(g^-1 h, R_g^-1 x)``, which is eqreg_hf's channel convention (core/groups.py).
    """
    kk = kernel_size * kernel_size
    elements = group.elements(include_identity=True)
    grid = torch.arange(kk).view(kernel_size, kernel_size)
    # (R_h psi)[p] = psi[perm_h[p]]: rotate_image of the position grid is the gather index
    perms = [rotate_image(grid, h, group).reshape(kk) for h in elements]
    outs = [elements[0]] if project else elements
    ins = [elements[0]] if lift else elements
    rows = []
    for a, h in enumerate(outs):
        for b, h2 in enumerate(ins):
            if lift:
                rows.append(perms[a])
            elif project:
                rows.append(perms[b])
            else:
                rows.append(_index(compose(_inverse(h, group), h2, group), group) * kk + perms[a])
    return torch.stack(rows).view(len(outs), len(ins), kk)


class GroupConv2d(nn.Module):
    """A stride-1 convolution between fields of C_t / D_t (t in {1, 2, 4}), expanded to one ``F.conv2d``.

    ``lift=True``: trivial input channels -> regular fields; ``project=True``: regular fields -> trivial
    output channels; neither: regular -> regular. Regular fields are field-major, ``|G|`` channels each, in
    eqreg_hf's convention (channel ``s*t + r`` of a D_t field), so ``T_g conv(x) = conv(T_g x)`` exactly.
    The free parameter has ``|G|`` kernels per field pair (regular -> regular) or one (lift, project); each
    forward gathers it into the full weight (one index, one permute).

    Example:
        >>> conv = GroupConv2d(3, 2, "D4", lift=True)
        >>> conv(torch.rand(1, 3, 5, 7)).shape
        torch.Size([1, 16, 5, 7])
    """

    def __init__(
        self,
        in_fields: int,
        out_fields: int,
        group: str | Group = "C4",
        kernel_size: int = 3,
        *,
        lift: bool = False,
        project: bool = False,
        bias: bool = True,
    ):
        super().__init__()
        grp = as_group(group)
        if grp.t not in (1, 2, 4):
            raise ValueError(
                f"group={grp.name!r}: GroupConv2d needs exact kernel turns, t in (1, 2, 4); use 'C4' or 'D4'."
            )
        if lift and project:
            raise ValueError(
                "GroupConv2d: lift=True and project=True together is a plain convolution; use nn.Conv2d."
            )
        n = grp.size
        self.group, self.kernel_size = grp, kernel_size
        self.n_in, self.n_out = (1 if lift else n), (1 if project else n)
        kk = kernel_size * kernel_size
        n_psi = 1 if (lift or project) else n
        fan_in = in_fields * self.n_in * kk
        self.weight = nn.Parameter(torch.randn(out_fields, in_fields, n_psi * kk) * (2.0 / fan_in) ** 0.5)
        self.bias = nn.Parameter(torch.zeros(out_fields)) if bias else None
        self.register_buffer("index", _expansion_index(grp, kernel_size, lift, project), persistent=False)

    def full_weight(self) -> torch.Tensor:
        """The ``[out_fields * n_out, in_fields * n_in, k, k]`` weight of the equivalent ``nn.Conv2d``."""
        o, i, _ = self.weight.shape
        w = self.weight[:, :, self.index]  # [O, I, n_out, n_in, kk]
        k = self.kernel_size
        return w.transpose(1, 2).reshape(o * self.n_out, i * self.n_in, k, k)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bias = self.bias.repeat_interleave(self.n_out) if self.bias is not None else None
        return F.conv2d(x, self.full_weight(), bias, padding=self.kernel_size // 2)


# --------------------------------------------------------------------------------------------
# StrictRestorer
# --------------------------------------------------------------------------------------------


def _strict_group(group) -> Group:
    name = group.upper() if isinstance(group, str) else group
    if name not in STRICT_GROUPS:
        raise ValueError(
            f"group={group!r} is not supported by StrictRestorer: choose one of {STRICT_GROUPS} "
            "(C4: the four quarter turns; D4: those and their mirror images)."
        )
    return as_group(name)


def _strict_parameters(fields: int, in_channels: int, depth: int, kernel_size: int, group) -> int:
    """Parameters of a :class:`StrictRestorer` (lift + (depth - 2) group convs + projection, with biases)."""
    n, kk = as_group(group).size, kernel_size * kernel_size
    return (
        (in_channels * fields * kk + fields)
        + (depth - 2) * (fields * fields * n * kk + fields)
        + (fields * in_channels * kk + in_channels)
    )


def _plain_parameters(channels: int, in_channels: int, depth: int, kernel_size: int) -> int:
    """Parameters of a :class:`DnCNN` with these arguments."""
    kk = kernel_size * kernel_size
    return (
        (in_channels * channels * kk + channels)
        + (depth - 2) * (channels * channels * kk + channels)
        + (channels * in_channels * kk + in_channels)
    )


class StrictRestorer(_ResidualChain, PyTorchModelHubMixin, tags=_TAGS + ["equivariant"], **_HUB_KW):
    """The strictly C4- or D4-equivariant twin of :class:`DnCNN`, in plain torch (no e2cnn at run time).

    Same layout (head + ReLU, ``depth - 2`` times body + ReLU, tail, residual on the bicubically upsampled
    input), but the head lifts the RGB image (trivial fields) to ``num_fields`` regular fields (4 channels
    each for C4, 8 for D4), the body convs map regular to regular fields, and the tail projects back to RGB
    (see :class:`GroupConv2d`). The ReLU acts channel-wise, so it commutes with the field permutations:
    turning (or, for D4, mirroring) the input turns the output and permutes every hidden map exactly as
    eqreg_hf's ``rotate_features`` says, so ``equivariance_error`` reads 0 (float error) at every tap.

    ``num_fields=None`` picks the field count whose parameter count is nearest that of ``DnCNN(channels,
    depth)`` (:meth:`matched_fields`): with the defaults 16 C4 fields (64 channels, 37,811 parameters) or
    11 D4 fields (88 channels, 35,500 parameters) against DnCNN's 38,755, at about 4x / 8x its compute.

    Args:
        group: ``"C4"`` or ``"D4"``.
        in_channels, depth, kernel_size, scale: as for :class:`DnCNN`.
        num_fields: regular fields of the hidden layers (``None``: matched to ``channels``).
        channels: the DnCNN width the parameter count is matched to (used only when ``num_fields`` is None).

    Example:
        >>> net = StrictRestorer("D4", num_fields=2, depth=3)
        >>> x = torch.rand(1, 3, 6, 9)
        >>> torch.allclose(net(x.flip(-1).rot90(1, (-2, -1))), net(x).flip(-1).rot90(1, (-2, -1)), atol=1e-6)
        True
        >>> net.eqreg_layers("D4")
        ['head', 'body.0']
    """

    def __init__(
        self,
        group: str = "C4",
        in_channels: int = 3,
        num_fields: int | None = None,
        depth: int = 6,
        kernel_size: int = 3,
        scale: int = 1,
        channels: int = 32,
    ):
        super().__init__()
        grp = _strict_group(group)
        if num_fields is None:
            num_fields = self.matched_fields(channels, depth, grp.name, in_channels, kernel_size)
        _check_shape(in_channels, num_fields, depth, kernel_size, scale, "num_fields")
        self.group, self.num_fields, self.scale = grp, num_fields, scale
        self.head = GroupConv2d(in_channels, num_fields, grp, kernel_size, lift=True)
        self.body = nn.ModuleList(
            [GroupConv2d(num_fields, num_fields, grp, kernel_size) for _ in range(depth - 2)]
        )
        self.tail = GroupConv2d(num_fields, in_channels, grp, kernel_size, project=True)
        with torch.no_grad():
            self.tail.weight.mul_(
                0.1
            )  # a small residual at first, as DnCNN: training starts near the identity

    @staticmethod
    def matched_fields(
        channels: int = 32, depth: int = 6, group: str = "C4", in_channels: int = 3, kernel_size: int = 3
    ) -> int:
        """The number of regular fields whose parameter count is nearest
        ``DnCNN(channels=channels, depth=depth)``'s.

        Example:
            >>> StrictRestorer.matched_fields(32, 6, "C4"), StrictRestorer.matched_fields(32, 6, "D4")
            (16, 11)
        """
        grp = _strict_group(group)
        target = _plain_parameters(channels, in_channels, depth, kernel_size)
        gap = [
            abs(_strict_parameters(f, in_channels, depth, kernel_size, grp) - target)
            for f in range(1, 4 * channels)
        ]
        return 1 + gap.index(min(gap))

    def eqreg_layers(self, group: int | str | Group = 4) -> list[str]:
        """The hidden group convolutions' outputs (``head``, ``body.i``; error 0 by construction).

        ``group``: a group name, or an int = the channels of one regular field (what ``layers="auto"`` passes:
        t for C_t, 2t for D_t; an int 4 is read as C4). The fields carry C4 (both nets) and D4 (the D4 net):
        a C2 or D2 field of 2 or 4 channels is not a contiguous block of these fields, so other groups are
        refused.
        """
        wanted = (
            as_group(group)
            if isinstance(group, (str, Group))
            else {4: Group(False, 4), 8: Group(True, 4)}.get(group)
        )
        ok = wanted is not None and (wanted == self.group or wanted == Group(False, 4))
        if not ok:
            label = wanted.name if wanted is not None else f"fields of {group} channels"
            usable = "C4 or D4" if self.group.dihedral else "C4"
            fix = "" if self.group.dihedral else " (or build StrictRestorer('D4') to have flips)"
            raise ValueError(
                f"StrictRestorer({self.group.name!r}) holds {self.group.name} regular fields "
                f"({self.group.size} channels each), so it can be measured or regularised under "
                f"{usable} only, not {label}: use group {usable}{fix}."
            )
        return _tap_names(len(self.body) + 2)


# --------------------------------------------------------------------------------------------
# Factory
# --------------------------------------------------------------------------------------------


def build_restorer(name: str, task: str = "denoise", scale: int = 2, **kwargs) -> nn.Module:
    """A restorer by name (``RESTORER_CHOICES``) for a task; ``scale`` is for ``task="sr"`` only (else 1).

    ``kwargs`` go to the constructor (e.g. ``channels=16`` for DnCNN, ``num_fields=8`` for the strict nets).

    Example:
        >>> build_restorer("strict-c4", "sr", scale=3, num_fields=2, depth=3)(torch.rand(1, 3, 4, 5)).shape
        torch.Size([1, 3, 12, 15])
    """
    if name not in RESTORER_CHOICES:
        raise ValueError(f"Unknown restorer {name!r}: choose one of {RESTORER_CHOICES}.")
    if task not in RESTORE_TASKS:
        raise ValueError(f"Unknown task {task!r}: choose one of {RESTORE_TASKS}.")
    kwargs = {**kwargs, "scale": scale if task == "sr" else 1}
    if name == "dncnn":
        return DnCNN(**kwargs)
    return StrictRestorer(group="C4" if name == "strict-c4" else "D4", **kwargs)
