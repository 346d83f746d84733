"""zero_padded_taps: the grid_sample-like bilinear rule of deform conv, MSDA and deformable aggregation."""

from __future__ import annotations

import math

import torch
from torch.nn import functional as F

from mmcv_runtime.ops._bilinear import weighted_row_sum, zero_padded_taps


def kernel_sample(img: torch.Tensor, y: float, x: float) -> torch.Tensor:
    """One point, as mmcv's deformable_im2col_bilinear: open-map test, then zero padding per corner."""
    _, h, w = img.shape
    if not (-1 < y < h and -1 < x < w):
        return img.new_zeros(img.shape[0])
    y0, x0 = math.floor(y), math.floor(x)
    ly, lx = y - y0, x - x0
    out = img.new_zeros(img.shape[0])
    for dy, dx, wt in ((0, 0, (1 - ly) * (1 - lx)), (0, 1, (1 - ly) * lx), (1, 0, ly * (1 - lx)), (1, 1, ly * lx)):
        r, c = y0 + dy, x0 + dx
        if 0 <= r <= h - 1 and 0 <= c <= w - 1:
            out = out + wt * img[:, r, c]
    return out


def _points(h, w):
    g = torch.Generator().manual_seed(0)
    y = torch.rand(300, generator=g, dtype=torch.float64) * (h + 3) - 2
    x = torch.rand(300, generator=g, dtype=torch.float64) * (w + 3) - 2
    # the edges of the rule: integral coordinates, the open bounds -1 and H / W, just inside them
    edges = torch.tensor([-1.0, -0.999, -0.5, 0.0, 1.0, h - 1, h - 0.5, h - 1e-9, h, h + 0.5], dtype=torch.float64)
    y = torch.cat([y, edges, edges.clamp(max=w)])
    x = torch.cat([x, edges.clamp(max=w), edges])
    return y, x


def _sample(img, y, x):
    index, weight, _ = zero_padded_taps(y, x, img.shape[1], img.shape[2])
    return weighted_row_sum(img.permute(1, 2, 0).reshape(-1, img.shape[0]), index, weight)


def test_matches_the_kernel_rule_and_grid_sample():
    img = torch.randn(3, 5, 7, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    y, x = _points(5, 7)
    out = _sample(img, y, x)
    expected = torch.stack([kernel_sample(img, float(a), float(b)) for a, b in zip(y, x)])
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-12)
    grid = torch.stack([(x + 0.5) / 7 * 2 - 1, (y + 0.5) / 5 * 2 - 1], -1).view(1, 1, -1, 2)
    reference = F.grid_sample(img[None], grid, align_corners=False, padding_mode="zeros")[0, :, 0].T
    torch.testing.assert_close(out, reference, rtol=0, atol=1e-12)


def test_coordinate_gradient_is_the_kernels_slope():
    # get_coordinate_weight: d/dy of the zero-padded blend, one-sided (floor) at integral points
    img = torch.randn(2, 4, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    y, x = _points(4, 6)
    y, x = y.requires_grad_(), x.requires_grad_()
    _sample(img, y, x).sum().backward()
    for i in range(len(y)):
        a, b = float(y.detach()[i]), float(x.detach()[i])
        if not (-1 < a < 4 and -1 < b < 6):
            assert y.grad[i] == 0 and x.grad[i] == 0
            continue
        y0, x0 = math.floor(a), math.floor(b)

        def v(r, c):
            return img[:, r, c].sum() if 0 <= r <= 3 and 0 <= c <= 5 else 0.0

        ly, lx = a - y0, b - x0
        dy = (1 - lx) * (v(y0 + 1, x0) - v(y0, x0)) + lx * (v(y0 + 1, x0 + 1) - v(y0, x0 + 1))
        dx = (1 - ly) * (v(y0, x0 + 1) - v(y0, x0)) + ly * (v(y0 + 1, x0 + 1) - v(y0 + 1, x0))
        assert abs(float(y.grad[i]) - float(dy)) < 1e-10
        assert abs(float(x.grad[i]) - float(dx)) < 1e-10


def test_valid_marks_taps_on_the_map_even_at_zero_weight():
    index, weight, valid = zero_padded_taps(torch.tensor([2.0, -0.5, 3.5]), torch.tensor([1.0, 0.0, 0.0]), 4, 4)
    # (2, 1) exactly: the (y_high, x_high) taps weigh 0 but lie on the map (their slope counts)
    assert valid[0].tolist() == [True, True, True, True] and weight[0].tolist() == [1.0, 0.0, 0.0, 0.0]
    assert valid[1].tolist() == [False, False, True, True]  # row -1 is off the map
    assert valid[2].tolist() == [True, True, False, False]  # row 4 is off the map
    assert (index[~valid] == 0).all() and (weight[~valid] == 0).all()


def test_empty_points():
    index, weight, valid = zero_padded_taps(torch.empty(0, 3), torch.empty(0, 3), 4, 4)
    assert index.shape == weight.shape == valid.shape == (0, 3, 4)


def test_tap_dots_fused_and_gathered_agree(monkeypatch):
    """tap_dots uses embedding_bag's fused per-sample-weight gradient when torch has it, a chunked
    gather otherwise: both are <rows[index[t]], grad_out[bag[t]]>."""
    import mmcv_runtime.ops._bilinear as bilinear

    g = torch.Generator().manual_seed(3)
    rows, grad_out = torch.randn(50, 7, generator=g, dtype=torch.float64), torch.randn(9, 7, generator=g, dtype=torch.float64)
    index, bag = torch.randint(0, 50, (40,), generator=g), torch.randint(0, 9, (40,), generator=g)
    expected = (rows[index] * grad_out[bag]).sum(1)
    torch.testing.assert_close(bilinear.tap_dots(rows, index, grad_out, bag), expected, rtol=0, atol=1e-12)
    monkeypatch.setattr(bilinear, "_PER_SAMPLE_WEIGHTS_BACKWARD", None)
    monkeypatch.setattr(bilinear, "_TAP_CHUNK_ELEMENTS", 7 * 6)  # several chunks
    torch.testing.assert_close(bilinear.tap_dots(rows, index, grad_out, bag), expected, rtol=0, atol=1e-12)
    assert bilinear.tap_dots(rows, index[:0], grad_out, bag[:0]).shape == (0,)
