"""Hypernetwork convolutions (HC) and an analytic FLOP / parameter counter.

A :class:`HyperConv2d` is a k×k convolution (stride 1, zero "same" padding) whose kernels and
biases are produced by an MLP ``g`` from a per-tile descriptor, for a fixed number ``T = gh·gw``
of output tiles (a ``gh × gw`` grid whose tiles grow with the image):

1. the output plane is split into ``gh`` row bands and ``gw`` column bands, band ``i`` of ``n``
   over a length ``L`` covering ``[i·L // n, (i+1)·L // n)``;
2. tile ``t`` gets a descriptor ``z_t``: ``"position"`` (the tile centre in normalized
   coordinates ``c ∈ (-1, 1)``, with ``sin/cos(π·f·c)`` for ``f = 1, 2``: 10 numbers),
   ``"content"`` (the input averaged over the tile, one number per input channel) or ``"both"``
   (the two concatenated);
3. ``W_t, b_t = reshape(gain · g(z_t))``;
4. the tile's output is an ordinary convolution of the input with ``W_t`` plus ``b_t``.

This layer is lowbit's **reconstruction** from the verified facts in the project notes on
Muller, "Overparametrization of HyperNetworks at Fixed FLOP-Count Enables Fast Neural Image
Enhancement" (CVPRW 2021): the paper's own definition of its HyperConvolution could not be read,
so this is not the paper's code, and which descriptor the paper uses is unknown.

Because the MLP runs ``T`` times per image (``B·T`` times under a content descriptor), not once
per pixel, its FLOPs are a constant that amortizes over large images: parameters can grow at a
fixed large-image FLOP count. Under ``descriptor="position"`` the kernels do not depend on the
data and :meth:`HyperConv2d.precompute` turns the layer into a :class:`TiledConv2d` (MLP cost
zero at inference).

Counting convention (:func:`layer_cost`): FLOPs = 2 × multiply-accumulates for convolutions and
matrix products (the convolution counts every tap, zero padding included, as torch's
``FlopCounterMode`` does); bias additions, ReLUs, the gain multiplies and descriptor sums count
one FLOP each and are listed separately.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

#: Descriptor kinds of :class:`HyperConv2d`.
DESCRIPTORS = ("position", "content", "both")
#: Frequencies of the Fourier features of the position descriptor.
POSITION_FREQUENCIES = (1, 2)
#: Numbers in a position descriptor: (cy, cx) and sin/cos of π·f·cy and π·f·cx per frequency.
POSITION_FEATURES = 2 + 4 * len(POSITION_FREQUENCIES)
#: Image sizes of the printed cost tables besides the training size: 1 MP and 12 MP.
REFERENCE_SIZES = ((1000, 1000), (3000, 4000))


def band_edges(length: int, bands: int) -> list[int]:
    """Edges ``[i·length // bands for i in 0..bands]`` of ``bands`` nearly equal bands."""
    return [i * length // bands for i in range(bands + 1)]


def position_descriptors(grid: tuple[int, int]) -> torch.Tensor:
    """The position descriptors of a ``(gh, gw)`` tile grid, shape ``(gh·gw, 10)``, row-major.

    Tile ``(i, j)`` has centre ``cy = (2i + 1)/gh − 1``, ``cx = (2j + 1)/gw − 1`` and
    descriptor ``[cy, cx, sin(π f cy), cos(π f cy), sin(π f cx), cos(π f cx) for f in (1, 2)]``.
    """
    gh, gw = grid
    rows = []
    for i in range(gh):
        for j in range(gw):
            cy, cx = (2 * i + 1) / gh - 1, (2 * j + 1) / gw - 1
            z = [cy, cx]
            for f in POSITION_FREQUENCIES:
                z += [math.sin(math.pi * f * cy), math.cos(math.pi * f * cy),
                      math.sin(math.pi * f * cx), math.cos(math.pi * f * cx)]
            rows.append(z)
    return torch.tensor(rows, dtype=torch.float32)


def tiled_conv2d(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor,
                 grid: tuple[int, int]) -> torch.Tensor:
    """Convolution with one kernel per output tile ("same" zero padding, stride 1).

    Parameters
    ----------
    x : tensor, shape (B, C_in, H, W)
    weight : tensor, shape (T, C_out, C_in, k, k) (shared by the batch) or
        (B, T, C_out, C_in, k, k) (one set per sample); ``T = gh·gw``, tiles row-major, k odd.
    bias : tensor, shape (T, C_out) or (B, T, C_out)
    grid : (gh, gw)

    Returns
    -------
    tensor, shape (B, C_out, H, W)
        On tile ``t``, equal to ``conv2d(x, weight[t], bias[t], padding=k // 2)`` there.
    """
    gh, gw = grid
    b, c_in, h, w = x.shape
    k = weight.shape[-1]
    p = k // 2
    xp = F.pad(x, (p, p, p, p))
    re, ce = band_edges(h, gh), band_edges(w, gw)
    per_sample = weight.dim() == 6
    rows = []
    for i in range(gh):
        cols = []
        for j in range(gw):
            t = i * gw + j
            patch = xp[:, :, re[i]:re[i + 1] + 2 * p, ce[j]:ce[j + 1] + 2 * p]
            if not per_sample:
                cols.append(F.conv2d(patch, weight[t], bias[t]))
                continue
            # One grouped convolution for the batch: sample s is group s.
            c_out = weight.shape[2]
            y = F.conv2d(patch.reshape(1, b * c_in, *patch.shape[2:]),
                         weight[:, t].reshape(b * c_out, c_in, k, k),
                         bias[:, t].reshape(b * c_out), groups=b)
            cols.append(y.reshape(b, c_out, *y.shape[2:]))
        rows.append(torch.cat(cols, dim=3))
    return torch.cat(rows, dim=2)


def _check_int(name: str, value: Any, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    return value


def _check_grid(tiles: Any) -> tuple[int, int]:
    if isinstance(tiles, int) and not isinstance(tiles, bool):
        g = math.isqrt(max(tiles, 0))
        if tiles < 1 or g * g != tiles:
            raise ValueError(f"tiles must be a square int (1, 4, 16, ...) or (gh, gw), got {tiles!r}")
        return g, g
    if (isinstance(tiles, Sequence) and len(tiles) == 2
            and all(isinstance(t, int) and not isinstance(t, bool) and t >= 1 for t in tiles)):
        return int(tiles[0]), int(tiles[1])
    raise ValueError(f"tiles must be a square int or a pair (gh, gw) of ints >= 1, got {tiles!r}")


class TiledConv2d(nn.Module):
    """A convolution with a fixed kernel per tile of a ``(gh, gw)`` grid (see :func:`tiled_conv2d`).

    What :meth:`HyperConv2d.precompute` returns for a position descriptor: the generated
    kernels frozen as buffers, so inference costs exactly the convolution.
    """

    weight: torch.Tensor
    bias: torch.Tensor

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor, grid: tuple[int, int]) -> None:
        super().__init__()
        self.grid = _check_grid(grid)
        if weight.dim() != 5 or weight.shape[0] != self.grid[0] * self.grid[1]:
            raise ValueError(f"weight must have shape (T={self.grid[0] * self.grid[1]}, C_out, "
                             f"C_in, k, k), got {tuple(weight.shape)}")
        self.register_buffer("weight", weight.detach().clone())
        self.register_buffer("bias", bias.detach().clone())
        self.in_channels, self.out_channels = int(weight.shape[2]), int(weight.shape[1])
        self.kernel_size = int(weight.shape[-1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return tiled_conv2d(x, self.weight, self.bias, self.grid)


class HyperConv2d(nn.Module):
    """A k×k convolution whose per-tile kernels an MLP predicts from a tile descriptor.

    Parameters
    ----------
    in_channels, out_channels : int
    kernel_size : int
        Odd; "same" zero padding, stride 1.
    tiles : int or (gh, gw)
        The fixed tile grid; an int must be a square (``4`` is a 2×2 grid). ``T = gh·gw``.
    descriptor : {"position", "content", "both"}
        What the MLP sees per tile (module docstring).
    hidden : int or sequence of int
        Hidden widths of the MLP (ReLU between layers); the parameter knob.

    Notes
    -----
    The MLP's output is multiplied by a fixed (not trained) gain ``1/n`` (``n`` = the last
    layer's input width), as for the output layer in μP: Adam moves each weight by about the
    learning rate per step, and the ReLU activations feeding the last layer are all >= 0, so
    without it a generated kernel entry would move ∝ n times faster with a wider MLP (a first
    study run with gain independent of ``n`` trained wide MLPs worse). The last layer is
    initialized N(0, 2n·s²) with ``s = sqrt(2 / (C_in·k²))`` (He), so that generated kernels
    start near He variance whatever the width (hidden activations have mean square about
    1/2); hidden layers are initialized N(0, 2/fan_in), all biases 0. The MLP's parameters are
    the layer's only parameters.
    """

    gain: torch.Tensor
    positions: torch.Tensor

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, *,
                 tiles: int | tuple[int, int] = 4, descriptor: str = "position",
                 hidden: int | Sequence[int] = 64) -> None:
        super().__init__()
        self.in_channels = _check_int("in_channels", in_channels)
        self.out_channels = _check_int("out_channels", out_channels)
        self.kernel_size = _check_int("kernel_size", kernel_size)
        if kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd, got {kernel_size!r}")
        self.grid = _check_grid(tiles)
        if descriptor not in DESCRIPTORS:
            raise ValueError(f"descriptor must be one of {DESCRIPTORS}, got {descriptor!r}")
        self.descriptor = descriptor
        widths = [hidden] if isinstance(hidden, int) else list(hidden)
        self.hidden = tuple(_check_int("hidden", h) for h in widths)
        self.kernel_numbers = out_channels * in_channels * kernel_size**2
        d = {"position": POSITION_FEATURES, "content": in_channels,
             "both": POSITION_FEATURES + in_channels}[descriptor]
        self.descriptor_size = d
        sizes = [d, *self.hidden, self.kernel_numbers + out_channels]
        layers: list[nn.Module] = []
        for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
            lin = nn.Linear(n_in, n_out)
            last = i == len(sizes) - 2
            he = math.sqrt(2.0 / (in_channels * kernel_size**2))
            with torch.no_grad():
                lin.weight.normal_(0.0, math.sqrt(2.0 * n_in) * he if last else
                                   math.sqrt(2.0 / n_in))
                lin.bias.zero_()
            layers += [lin] if last else [lin, nn.ReLU()]
        self.mlp = nn.Sequential(*layers)
        self.mlp_sizes = tuple(sizes)
        self.register_buffer("gain", torch.tensor(1.0 / sizes[-2]))
        self.register_buffer("positions", position_descriptors(self.grid))

    @property
    def tiles(self) -> int:
        """T, the number of tiles (MLP evaluations per image)."""
        return self.grid[0] * self.grid[1]

    def descriptors(self, x: torch.Tensor | None = None) -> torch.Tensor:
        """The MLP inputs: shape (T, d) for a position descriptor, else (B, T, d) from ``x``."""
        if self.descriptor == "position":
            return self.positions
        if x is None:
            raise ValueError(f"descriptor={self.descriptor!r} needs the input x")
        gh, gw = self.grid
        re, ce = band_edges(x.shape[2], gh), band_edges(x.shape[3], gw)
        pooled = torch.stack([x[:, :, re[i]:re[i + 1], ce[j]:ce[j + 1]].mean(dim=(2, 3))
                              for i in range(gh) for j in range(gw)], dim=1)  # (B, T, C_in)
        if self.descriptor == "content":
            return pooled
        pos = self.positions.unsqueeze(0).expand(x.shape[0], -1, -1)
        return torch.cat([pos, pooled], dim=2)

    def kernels(self, x: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The generated (weight, bias): (T, C_out, C_in, k, k) and (T, C_out) for a position
        descriptor, else with a leading batch axis B taken from ``x``."""
        z = self.descriptors(x)
        out = self.mlp(z) * self.gain
        lead = out.shape[:-1]
        weight = out[..., :self.kernel_numbers].reshape(
            *lead, self.out_channels, self.in_channels, self.kernel_size, self.kernel_size)
        return weight, out[..., self.kernel_numbers:]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"x must have shape (B, {self.in_channels}, H, W), got {tuple(x.shape)}")
        if x.shape[2] < self.grid[0] or x.shape[3] < self.grid[1]:
            raise ValueError(f"x of size {tuple(x.shape[2:])} is smaller than the tile grid {self.grid}")
        weight, bias = self.kernels(x)
        return tiled_conv2d(x, weight, bias, self.grid)

    def precompute(self) -> TiledConv2d:
        """The layer with its kernels generated once (position descriptor only).

        Raises
        ------
        ValueError
            The descriptor depends on the input (``"content"`` or ``"both"``).
        """
        if self.descriptor != "position":
            raise ValueError(f"kernels can be precomputed only for descriptor='position', "
                             f"not {self.descriptor!r}: they depend on the input")
        with torch.no_grad():
            weight, bias = self.kernels()
        return TiledConv2d(weight, bias, self.grid)

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"tiles={self.grid}, descriptor={self.descriptor!r}, hidden={self.hidden}")


# -- the counter ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Cost:
    """FLOPs (by part) and parameters of a layer or network at one input size."""

    #: 2 × multiply-accumulates of the convolutions (every tap, zero padding included).
    conv: int = 0
    #: Bias additions of the convolutions.
    conv_bias: int = 0
    #: 2 × multiply-accumulates of the MLP's matrix products.
    mlp: int = 0
    #: MLP bias additions, ReLUs and gain multiplies.
    mlp_elementwise: int = 0
    #: Descriptor work (content: one addition per input value and one division per mean).
    descriptor: int = 0
    #: Trainable parameters.
    params: int = 0
    #: Output pixels the FLOPs are spread over (batch × height × width).
    pixels: int = 1

    @property
    def flops(self) -> int:
        """All FLOPs."""
        return self.conv + self.conv_bias + self.mlp + self.mlp_elementwise + self.descriptor

    @property
    def matmul_flops(self) -> int:
        """The part torch's ``FlopCounterMode`` measures: convolutions and matrix products."""
        return self.conv + self.mlp

    @property
    def per_pixel(self) -> float:
        """FLOPs per output pixel."""
        return self.flops / self.pixels

    def __add__(self, other: Cost) -> Cost:
        """The cost of two layers applied to the same image (pixels of the first kept)."""
        return Cost(self.conv + other.conv, self.conv_bias + other.conv_bias,
                    self.mlp + other.mlp, self.mlp_elementwise + other.mlp_elementwise,
                    self.descriptor + other.descriptor, self.params + other.params, self.pixels)


def layer_cost(layer: nn.Module, height: int, width: int, batch: int = 1) -> Cost:
    """The :class:`Cost` of one ``nn.Conv2d`` (stride 1, "same" padding), :class:`TiledConv2d`
    or :class:`HyperConv2d` on a ``batch × C_in × height × width`` input.

    Convolution: ``2·B·H·W·C_in·C_out·k²/groups`` plus ``B·H·W·C_out`` bias additions. MLP of
    sizes ``n_0 = d, …, n_{L+1} = m``, evaluated ``E = T`` times (position descriptor; the
    kernels are shared by the batch) or ``E = B·T`` times (content, both):
    ``E·Σ 2·n_{l-1}·n_l`` plus ``E·(Σ n_l + Σ hidden + m)`` (biases, ReLUs, gains). Content
    descriptor: ``B·(H·W·C_in + T·C_in)``. Parameters: ``Σ (n_{l-1} + 1)·n_l``.

    Raises
    ------
    TypeError
        ``layer`` is none of these.
    ValueError
        A size is not a positive int, or an ``nn.Conv2d`` is strided, dilated or not "same".
    """
    for name, v in (("height", height), ("width", width), ("batch", batch)):
        _check_int(name, v)
    pixels = batch * height * width
    if isinstance(layer, nn.Conv2d):
        kh, kw = layer.kernel_size
        if (layer.stride != (1, 1) or layer.dilation != (1, 1)
                or layer.padding not in ((kh // 2, kw // 2), "same")):
            raise ValueError(f"layer_cost counts stride-1 'same' convolutions, got {layer}")
        macs = pixels * layer.in_channels * layer.out_channels * kh * kw // layer.groups
        params = sum(p.numel() for p in layer.parameters())
        bias = pixels * layer.out_channels if layer.bias is not None else 0
        return Cost(conv=2 * macs, conv_bias=bias, params=params, pixels=pixels)
    if isinstance(layer, (TiledConv2d, HyperConv2d)):
        k = layer.kernel_size
        conv = 2 * pixels * layer.in_channels * layer.out_channels * k * k
        cost = Cost(conv=conv, conv_bias=pixels * layer.out_channels, pixels=pixels)
        if isinstance(layer, TiledConv2d):
            return cost
        sizes, t = layer.mlp_sizes, layer.tiles
        evals = t if layer.descriptor == "position" else batch * t
        mm = 2 * sum(a * b for a, b in zip(sizes[:-1], sizes[1:], strict=True))
        elementwise = sum(sizes[1:]) + sum(sizes[1:-1]) + sizes[-1]
        desc = 0 if layer.descriptor == "position" else batch * (
            height * width * layer.in_channels + t * layer.in_channels)
        params = sum((a + 1) * b for a, b in zip(sizes[:-1], sizes[1:], strict=True))
        return Cost(conv=conv, conv_bias=cost.conv_bias, mlp=evals * mm,
                    mlp_elementwise=evals * elementwise, descriptor=desc, params=params,
                    pixels=pixels)
    raise TypeError(f"layer_cost counts nn.Conv2d, TiledConv2d and HyperConv2d, got "
                    f"{type(layer).__name__}")


def format_cost_table(costs: Sequence[tuple[str, Cost]]) -> list[str]:
    """Markdown rows (header first) of ``(label, cost)`` pairs: FLOPs by part, per pixel, the
    MLP's share and the parameters."""
    lines = ["| size | conv GFLOP | MLP GFLOP | descriptor GFLOP | FLOPs/pixel | MLP share | params |",
             "|---|---|---|---|---|---|---|"]
    for label, c in costs:
        mlp = c.mlp + c.mlp_elementwise
        lines.append(f"| {label} | {(c.conv + c.conv_bias) / 1e9:.4g} | {mlp / 1e9:.4g} | "
                     f"{c.descriptor / 1e9:.4g} | {c.per_pixel:.5g} | "
                     f"{100 * mlp / max(c.flops, 1):.3g} % | {c.params:,} |")
    return lines


def costs_at_sizes(layer: nn.Module, train_size: tuple[int, int, int]) -> list[tuple[str, Cost]]:
    """``layer``'s cost at the training size ``(batch, height, width)``, at 1 MP and at 12 MP
    (batch 1), labelled, for :func:`format_cost_table`."""
    b, h, w = train_size
    out = [(f"training {b}×{h}×{w}", layer_cost(layer, h, w, b))]
    for hh, ww in REFERENCE_SIZES:
        out.append((f"{hh * ww / 1e6:g} MP ({hh}×{ww})", layer_cost(layer, hh, ww)))
    return out
