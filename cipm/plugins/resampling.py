"""Rules for ops that resample spatial dims: pooling, interpolation (``F.interpolate``,
``nn.Upsample``), pixel shuffles, and patch extraction (``F.unfold`` / ``F.fold``).

They read or write positions, so spatial dims are fixed, while each channel is resampled on
its own: the batch and channel axes pass through. Where channels and positions share a dim
(``pixel_shuffle``'s ``C·r²``, ``im2col``'s ``C·kh·kw``) the dim is a product with the
channels outer and the positions inner and fixed, so pruning drops whole blocks.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from cipm.plugin import OpCall, Rule, hookimpl

# interpolations torch.export emits for F.interpolate / nn.Upsample, every overload (.vec
# for a scale or a size, .default with explicit sizes); "area" is adaptive_avg_pool (layers)
INTERPOLATIONS = {
    "upsample_nearest1d": 1,
    "upsample_nearest2d": 2,
    "upsample_nearest3d": 3,
    "_upsample_nearest_exact1d": 1,
    "_upsample_nearest_exact2d": 2,
    "_upsample_nearest_exact3d": 3,
    "upsample_linear1d": 1,
    "upsample_bilinear2d": 2,
    "upsample_bicubic2d": 2,
    "upsample_trilinear3d": 3,
    "_upsample_bilinear2d_aa": 2,
    "_upsample_bicubic2d_aa": 2,
}


def pool(call: OpCall) -> None:
    """Pooling over spatial dims: batch and channel axes pass through, spatial ones are fixed."""
    x = call.tensor(0)
    spatial_in = len(call.value("kernel_size", call.value("output_size", ())) or ()) or 2
    keep = x.ndim - spatial_in
    call.fix(*x.axes[keep:])
    for i, shape in enumerate(call.output_shapes):
        if shape is not None:
            spatial = [call.new(n) for n in shape[keep:]]
            call.fix(*spatial)
            call.set_output([*x.axes[:keep], *spatial], i)


POOLS = """
max_pool1d max_pool2d max_pool3d avg_pool1d avg_pool2d avg_pool3d max_pool2d_with_indices
max_pool3d_with_indices adaptive_avg_pool1d adaptive_avg_pool2d adaptive_avg_pool3d
_adaptive_avg_pool2d adaptive_max_pool1d adaptive_max_pool2d lp_pool2d
""".split()


def interpolate(call: OpCall) -> None:
    """upsample_*(x[N, C, *spatial]): each channel of each sample is interpolated on its own,
    so N and C pass through; input and output positions are fixed."""
    x = call.tensor(0)
    packet = call.op.split(".")[1]
    keep = x.ndim - INTERPOLATIONS.get(packet, x.ndim - 2)
    call.fix(*x.axes[keep:])
    spatial = [call.new(n) for n in call.out_shape[keep:]]
    call.fix(*spatial)
    call.set_output([*x.axes[:keep], *spatial])


def pixel_shuffle(call: OpCall) -> None:
    """pixel_shuffle(x[*, C·r², H, W], r) -> [*, C, H·r, W·r]: channel c·r² + i·r + j goes to
    offset (i, j) of channel c, so the channel dim is a product [C, r²] whose r² offsets
    become positions (fixed)."""
    x = call.tensor(0)
    r = int(call.value(1))
    channels, subpixel = call.split(x.axes[-3], "product", [x.shape[-3] // (r * r), r * r])
    call.fix(subpixel, *x.axes[-2:])
    spatial = [call.new(n) for n in call.out_shape[-2:]]
    call.fix(*spatial)
    call.set_output([*x.axes[:-3], channels, *spatial])


def pixel_unshuffle(call: OpCall) -> None:
    """pixel_unshuffle(x[*, C, H·r, W·r], r) -> [*, C·r², H, W]: the inverse of
    `pixel_shuffle`; the output channels are a product [C, r²] of fixed offsets."""
    x = call.tensor(0)
    r = int(call.value(1))
    call.fix(*x.axes[-2:])
    subpixel = call.new(r * r)
    spatial = [call.new(n) for n in call.out_shape[-2:]]
    call.fix(subpixel, *spatial)
    call.set_output([*x.axes[:-3], call.join("product", [x.axes[-3], subpixel]), *spatial])


def im2col(call: OpCall) -> None:
    """im2col / F.unfold(x[N, C, H, W]) -> [N, C·kh·kw, L]: row c·kh·kw + k holds channel c
    at kernel offset k, so the rows are a product [C, kh·kw]; offsets and blocks are fixed."""
    x = call.tensor(0)
    c = x.ndim - 3  # unbatched (C, H, W) too
    call.fix(*x.axes[c + 1 :])
    offsets = call.new(math.prod(call.value("kernel_size")))
    blocks = call.new(call.out_shape[-1])
    call.fix(offsets, blocks)
    call.set_output([*x.axes[:c], call.join("product", [x.axes[c], offsets]), blocks])


def col2im(call: OpCall) -> None:
    """col2im / F.fold(x[N, C·kh·kw, L]) -> [N, C, H, W]: the inverse of `im2col` (blocks
    summed where they overlap); the rows are a product [C, kh·kw] of fixed offsets."""
    x = call.tensor(0)
    c = x.ndim - 2
    k = math.prod(call.value("kernel_size"))
    channels, offsets = call.split(x.axes[c], "product", [x.shape[c] // k, k])
    call.fix(offsets, x.axes[c + 1])
    spatial = [call.new(n) for n in call.out_shape[c + 1 :]]
    call.fix(*spatial)
    call.set_output([*x.axes[:c], channels, *spatial])


@hookimpl
def cipm_rules() -> Mapping[str, Rule]:
    rules: dict[str, Rule] = {f"aten.{op}": pool for op in POOLS}
    rules.update({f"aten.{op}": interpolate for op in INTERPOLATIONS})
    rules.update(
        {
            "aten.pixel_shuffle": pixel_shuffle,
            "aten.pixel_unshuffle": pixel_unshuffle,
            "aten.im2col": im2col,
            "aten.col2im": col2im,
        }
    )
    return rules
