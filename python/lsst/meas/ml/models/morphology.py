"""Galaxy-morphology classifiers: a deformable attention transformer and a ResNet.

Input: ``(N, C, S, S)`` stamps (band images, then the object mask, then one
mask of unusable pixels per band, as `lsst.meas.ml.morphology.features`
prepares them).  Output: ``(N, K)`` class logits.  Both models also give
an ``(N, S, S)`` map of where they look (`attention_maps`).

``morph_dat`` is a small deformable attention transformer (DAT, Xia et
al. 2022; used for galaxy morphology by Kang et al. 2022): a convolutional
stem brings the stamp to ``S / 4`` tokens; stage 1 runs ordinary
multi-head self-attention on them; a strided convolution halves the grid
and doubles the width; stage 2 runs *deformable* attention: an offset
network looks at the queries and moves a coarse grid of reference points
(one per ``offset_stride`` x ``offset_stride`` tokens) by learned offsets
(bounded by ``offset_range`` token widths through a ``tanh``); keys and
values are sampled at the moved points by bilinear interpolation
(`torch.nn.functional.grid_sample`), and every query attends to them, with
a relative-position bias interpolated from a learned table at each
query-to-sample displacement.  The head averages the tokens.

``morph_resnet`` is the baseline: a small ResNet of basic blocks with
global average pooling.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from . import register_architecture

__all__ = ["DeformableAttention", "MorphologyDat", "MorphologyResNet"]


def _check_input(x: torch.Tensor, in_channels: int, stamp_size: int, name: str) -> None:
    if x.ndim != 4 or x.shape[1] != in_channels or x.shape[-1] != stamp_size or x.shape[-2] != stamp_size:
        raise ValueError(
            f"{name} expects stamps of shape (N, {in_channels}, {stamp_size}, {stamp_size}); "
            f"got {tuple(x.shape)}"
        )


class _Mlp(nn.Module):
    def __init__(self, dim: int, ratio: float) -> None:
        super().__init__()
        hidden = max(1, int(dim * ratio))
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class _GlobalAttention(nn.Module):
    """Multi-head self-attention over all tokens of a ``(N, C, H, W)`` map."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        n, c, h, w = x.shape
        tokens = x.flatten(2).transpose(1, 2)  # (N, HW, C)
        qkv = self.qkv(tokens).reshape(n, h * w, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        attn = (q @ k.transpose(-2, -1)) * (c // self.heads) ** -0.5
        attn = attn.softmax(dim=-1)
        out = (attn @ v).transpose(1, 2).reshape(n, h * w, c)
        return self.proj(out).transpose(1, 2).reshape(n, c, h, w), attn


class DeformableAttention(nn.Module):
    """Deformable multi-head attention on a ``(N, C, H, W)`` token map.

    Parameters
    ----------
    dim : `int`
        Token width (divisible by ``heads``).
    heads : `int`
        Attention heads.
    offset_stride : `int`
        One reference point per ``offset_stride`` x ``offset_stride`` tokens.
    offset_range : `float`
        Largest offset of a reference point, in tokens.
    """

    def __init__(self, dim: int, heads: int, offset_stride: int = 2, offset_range: float = 2.0) -> None:
        super().__init__()
        self.heads = heads
        self.offset_range = float(offset_range)
        self.q = nn.Conv2d(dim, dim, 1)
        self.kv = nn.Conv2d(dim, 2 * dim, 1)
        self.proj = nn.Conv2d(dim, dim, 1)
        k = offset_stride + 1 if offset_stride % 2 == 0 else offset_stride
        self.offset_net = nn.Sequential(
            nn.Conv2d(dim, dim, k, stride=offset_stride, padding=k // 2, groups=dim),
            nn.GELU(),
            nn.Conv2d(dim, 2, 1, bias=False),
        )
        # Relative-position bias: a (2R-1) x (2R-1) table per head over
        # displacements in [-2, 2] (normalised coordinates), read bilinearly.
        self.rpb = nn.Parameter(torch.zeros(1, heads, 15, 15))
        nn.init.zeros_(self.offset_net[-1].weight)

    @staticmethod
    def _grid(h: int, w: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        """``(h, w, 2)`` normalised ``(x, y)`` pixel centres in [-1, 1] (``align_corners=False``)."""
        ys = (torch.arange(h, device=device, dtype=dtype) + 0.5) / h * 2 - 1
        xs = (torch.arange(w, device=device, dtype=dtype) + 0.5) / w * 2 - 1
        gy, gx = torch.meshgrid(ys, xs, indexing="ij")
        return torch.stack([gx, gy], dim=-1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Attend from every token to features sampled at the deformed points.

        Parameters
        ----------
        x : `torch.Tensor`
            ``(N, C, H, W)`` tokens.

        Returns
        -------
        out : `torch.Tensor`
            ``(N, C, H, W)``.
        attn : `torch.Tensor`
            ``(N, heads, H*W, P)`` attention weights over the ``P`` sampled points.
        points : `torch.Tensor`
            ``(N, P, 2)`` sampled ``(x, y)`` positions, normalised to [-1, 1].
        """
        n, c, h, w = x.shape
        q = self.q(x)
        offsets = self.offset_net(q)  # (N, 2, Hr, Wr), in tokens before scaling
        hr, wr = offsets.shape[-2:]
        ref = self._grid(hr, wr, x.device, x.dtype)[None]  # (1, Hr, Wr, 2)
        scale = torch.tensor([2.0 / w, 2.0 / h], device=x.device, dtype=x.dtype)
        delta = torch.tanh(offsets.permute(0, 2, 3, 1)) * self.offset_range * scale
        points = (ref + delta).clamp(-1.0, 1.0)  # (N, Hr, Wr, 2)
        sampled = F.grid_sample(x, points, mode="bilinear", padding_mode="zeros", align_corners=False)
        kv = self.kv(sampled).reshape(n, 2, self.heads, c // self.heads, hr * wr)
        k, v = kv[:, 0], kv[:, 1]  # (N, heads, d, P)
        qh = q.reshape(n, self.heads, c // self.heads, h * w).transpose(-2, -1)  # (N, heads, HW, d)
        attn = (qh @ k) * (c // self.heads) ** -0.5  # (N, heads, HW, P)
        # Bias from the displacement between each query and each sampled point.
        qpos = self._grid(h, w, x.device, x.dtype).reshape(h * w, 2)
        pts = points.reshape(n, hr * wr, 2)
        disp = (qpos[None, :, None, :] - pts[:, None, :, :]) * 0.5  # in [-1, 1]
        bias = F.grid_sample(
            self.rpb.expand(n, -1, -1, -1), disp, mode="bilinear", padding_mode="border", align_corners=True
        )  # (N, heads, HW, P)
        attn = (attn + bias).softmax(dim=-1)
        out = (attn @ v.transpose(-2, -1)).transpose(-2, -1).reshape(n, c, h, w)
        return self.proj(out), attn, pts


class _Block(nn.Module):
    def __init__(
        self,
        dim: int,
        heads: int,
        mlp_ratio: float,
        deformable: bool,
        offset_stride: int,
        offset_range: float,
    ) -> None:
        super().__init__()
        self.norm1 = nn.GroupNorm(1, dim)
        self.attn: nn.Module = (
            DeformableAttention(dim, heads, offset_stride, offset_range)
            if deformable
            else _GlobalAttention(dim, heads)
        )
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = _Mlp(dim, mlp_ratio)
        self.deformable = deformable

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        res = self.attn(self.norm1(x))
        x = x + res[0]
        t = x.permute(0, 2, 3, 1)
        x = x + self.mlp(self.norm2(t)).permute(0, 3, 1, 2)
        return x, res[1:]


@register_architecture("morph_dat")
class MorphologyDat(nn.Module):
    """Deformable attention transformer for galaxy stamps.

    Parameters
    ----------
    in_channels : `int`
        Stamp channels (11 for five bands with object and NaN masks).
    stamp_size : `int`
        Stamp side in pixels; divisible by 8.
    n_classes : `int`
        Output classes.
    dims : `~collections.abc.Sequence` [`int`]
        Token width of the two stages.
    depths : `~collections.abc.Sequence` [`int`]
        Blocks per stage (stage 1 global attention, stage 2 deformable).
    heads : `~collections.abc.Sequence` [`int`]
        Attention heads per stage.
    mlp_ratio : `float`
        Hidden width of the block MLPs relative to the token width.
    offset_stride : `int`
        Tokens per reference point (per axis) in the deformable stage.
    offset_range : `float`
        Largest offset of a reference point, in tokens.
    dropout : `float`
        Dropout before the classifier.
    """

    def __init__(
        self,
        in_channels: int = 11,
        stamp_size: int = 64,
        n_classes: int = 6,
        dims: Sequence[int] = (32, 64),
        depths: Sequence[int] = (1, 2),
        heads: Sequence[int] = (2, 4),
        mlp_ratio: float = 2.0,
        offset_stride: int = 2,
        offset_range: float = 2.0,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        if stamp_size % 8:
            raise ValueError(f"stamp_size must be divisible by 8 for morph_dat, got {stamp_size}")
        if len(dims) != 2 or len(depths) != 2 or len(heads) != 2:
            raise ValueError("morph_dat has two stages: dims, depths and heads need two entries each")
        if any(d % h for d, h in zip(dims, heads)):
            raise ValueError(f"dims {list(dims)} must be divisible by heads {list(heads)}")
        self.in_channels = int(in_channels)
        self.stamp_size = int(stamp_size)
        self.n_classes = int(n_classes)
        d1, d2 = int(dims[0]), int(dims[1])
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, d1 // 2, 3, stride=2, padding=1),
            nn.GroupNorm(1, d1 // 2),
            nn.GELU(),
            nn.Conv2d(d1 // 2, d1, 3, stride=2, padding=1),
        )
        grid = stamp_size // 4
        self.pos = nn.Parameter(torch.zeros(1, d1, grid, grid))
        nn.init.trunc_normal_(self.pos, std=0.02)
        self.stage1 = nn.ModuleList(
            [_Block(d1, heads[0], mlp_ratio, False, offset_stride, offset_range) for _ in range(depths[0])]
        )
        self.down = nn.Sequential(nn.GroupNorm(1, d1), nn.Conv2d(d1, d2, 2, stride=2))
        self.stage2 = nn.ModuleList(
            [_Block(d2, heads[1], mlp_ratio, True, offset_stride, offset_range) for _ in range(depths[1])]
        )
        self.norm = nn.LayerNorm(d2)
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(d2, n_classes))

    def _features(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        _check_input(x, self.in_channels, self.stamp_size, "morph_dat")
        h = self.stem(x) + self.pos
        for block in self.stage1:
            h, _ = block(h)
        h = self.down(h)
        last: tuple[torch.Tensor, ...] = ()
        for block in self.stage2:
            h, last = block(h)
        return self.norm(h.flatten(2).mean(dim=-1)), last

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Return the pooled representation the classifier head reads.

        Parameters
        ----------
        x : `torch.Tensor`
            ``(N, C, S, S)`` stamps.

        Returns
        -------
        features : `torch.Tensor`
            ``(N, dims[1])``.
        """
        return self._features(x)[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return the class logits of stamps.

        Parameters
        ----------
        x : `torch.Tensor`
            ``(N, C, S, S)`` stamps.

        Returns
        -------
        logits : `torch.Tensor`
            ``(N, n_classes)``.
        """
        return self.head(self._features(x)[0])

    def attention_maps(self, x: torch.Tensor, sigma: float = 1.5) -> torch.Tensor:
        """Where the last deformable block looks, as an image of the stamp.

        The attention each sampled point receives (averaged over heads and
        queries) is spread with a Gaussian of ``sigma`` stamp pixels at the
        point's (deformed) position.

        Parameters
        ----------
        x : `torch.Tensor`
            ``(N, C, S, S)`` stamps.
        sigma : `float`
            Width of the Gaussian, in stamp pixels.

        Returns
        -------
        maps : `torch.Tensor`
            ``(N, S, S)``, each map summing to 1.
        """
        _, (attn, points) = self._features(x)
        weight = attn.mean(dim=(1, 2))  # (N, P)
        s = self.stamp_size
        pix = (points + 1) * 0.5 * s - 0.5  # (N, P, 2) in stamp pixels (x, y)
        grid = torch.arange(s, device=x.device, dtype=x.dtype)
        gx = torch.exp(-0.5 * ((grid[None, None, :] - pix[..., 0:1]) / sigma) ** 2)  # (N, P, S)
        gy = torch.exp(-0.5 * ((grid[None, None, :] - pix[..., 1:2]) / sigma) ** 2)
        maps = torch.einsum("np,npy,npx->nyx", weight, gy, gx)
        return maps / maps.sum(dim=(-2, -1), keepdim=True).clamp_min(1e-12)


class _BasicBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.skip = (
            nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), nn.BatchNorm2d(c_out))
            if stride != 1 or c_in != c_out
            else nn.Identity()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(h)) + self.skip(x))


@register_architecture("morph_resnet")
class MorphologyResNet(nn.Module):
    """ResNet baseline for galaxy stamps.

    Parameters
    ----------
    in_channels : `int`
        Stamp channels.
    stamp_size : `int`
        Stamp side in pixels.
    n_classes : `int`
        Output classes.
    widths : `~collections.abc.Sequence` [`int`]
        Channels of each stage (one basic block each; every stage after
        the first halves the grid).
    dropout : `float`
        Dropout before the classifier.
    """

    def __init__(
        self,
        in_channels: int = 11,
        stamp_size: int = 64,
        n_classes: int = 6,
        widths: Sequence[int] = (16, 32, 64),
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        self.in_channels = int(in_channels)
        self.stamp_size = int(stamp_size)
        self.n_classes = int(n_classes)
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, widths[0], 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(widths[0]),
            nn.ReLU(inplace=True),
        )
        blocks = []
        previous = widths[0]
        for i, width in enumerate(widths):
            blocks.append(_BasicBlock(previous, width, 1 if i == 0 else 2))
            previous = width
        self.blocks = nn.Sequential(*blocks)
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(previous, n_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return the class logits of stamps.

        Parameters
        ----------
        x : `torch.Tensor`
            ``(N, C, S, S)`` stamps.

        Returns
        -------
        logits : `torch.Tensor`
            ``(N, n_classes)``.
        """
        return self.head(self.features(x))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Return the pooled representation the classifier head reads.

        Parameters
        ----------
        x : `torch.Tensor`
            ``(N, C, S, S)`` stamps.

        Returns
        -------
        features : `torch.Tensor`
            ``(N, widths[-1])``.
        """
        _check_input(x, self.in_channels, self.stamp_size, "morph_resnet")
        return self.blocks(self.stem(x)).mean(dim=(-2, -1))

    def attention_maps(self, x: torch.Tensor) -> torch.Tensor:
        """Class activation map of the predicted class, as an image of the stamp.

        Parameters
        ----------
        x : `torch.Tensor`
            ``(N, C, S, S)`` stamps.

        Returns
        -------
        maps : `torch.Tensor`
            ``(N, S, S)``, non-negative, each summing to 1 (uniform where
            the map is zero everywhere).
        """
        _check_input(x, self.in_channels, self.stamp_size, "morph_resnet")
        feats = self.blocks(self.stem(x))  # (N, C, h, w)
        linear = self.head[-1]
        logits = linear(feats.mean(dim=(-2, -1)))
        weights = linear.weight[logits.argmax(dim=1)]  # (N, C)
        cam = F.relu(torch.einsum("nc,nchw->nhw", weights, feats))[:, None]
        cam = (
            F.interpolate(cam, size=(self.stamp_size, self.stamp_size), mode="bilinear", align_corners=False)[
                :, 0
            ]
            + 1e-12
        )
        return cam / cam.sum(dim=(-2, -1), keepdim=True)
