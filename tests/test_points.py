"""Chapter 8 point clouds: surface sampling, FPS, kNN grouping, the Point-BERT-style encoder, bad input."""

import numpy as np
import pytest
import torch

from mmllm_course.data.points import (
    SOLIDS,
    PointCloudConfig,
    PointCloudDataset,
    make_point_clouds,
    random_rotations,
    sample_surface,
)
from mmllm_course.data import points as pdata
from mmllm_course.encoders.points import (
    MiniPointNet,
    PointEncoder,
    PointEncoderConfig,
    farthest_point_sampling,
    gather_points,
    knn_group,
)


def _naive_fps(pts, s, start=0):
    chosen = [start]
    for _ in range(s - 1):
        d = np.min([((pts - pts[c]) ** 2).sum(-1) for c in chosen], axis=0)
        chosen.append(int(d.argmax()))
    return chosen


def test_fps_matches_the_greedy_definition_and_spreads_points():
    torch.manual_seed(0)
    pts = torch.randn(3, 200, 3)
    idx = farthest_point_sampling(pts, 20)
    for b in range(3):
        assert idx[b].tolist() == _naive_fps(pts[b].numpy(), 20)
    assert len(set(idx[0].tolist())) == 20
    start = torch.tensor([5, 7, 9])
    assert farthest_point_sampling(pts, 4, start)[:, 0].tolist() == [5, 7, 9]
    # FPS spreads: the closest pair of FPS centres is farther apart than that of the first 20 points
    fps_min = torch.pdist(gather_points(pts, idx)[0]).min()
    assert fps_min > torch.pdist(pts[0, :20]).min()


def test_knn_group_matches_brute_force_and_is_relative():
    torch.manual_seed(1)
    pts = torch.randn(2, 50, 3)
    centers = pts[:, :4]
    idx, groups = knn_group(pts, centers, 6)
    assert idx.shape == (2, 4, 6) and groups.shape == (2, 4, 6, 3)
    brute = ((pts[:, None] - centers[:, :, None]) ** 2).sum(-1).argsort(dim=-1)[..., :6]
    assert torch.equal(idx, brute)
    assert torch.equal(idx[:, :, 0], torch.arange(4).expand(2, 4))  # a centre is its own nearest neighbour
    assert groups[:, :, 0].abs().max() == 0
    assert torch.allclose(groups + centers[:, :, None], gather_points(pts, idx))


def test_mini_pointnet_ignores_the_order_of_points_in_a_group():
    torch.manual_seed(2)
    net = MiniPointNet(32, 16).eval()
    groups = torch.randn(2, 5, 8, 3)
    perm = torch.randperm(8)
    assert torch.allclose(net(groups), net(groups[:, :, perm]), atol=1e-6)


def test_point_encoder_shapes_and_order_invariance():
    torch.manual_seed(3)
    enc = PointEncoder(PointEncoderConfig(num_groups=8, group_size=8, dim=32, num_heads=4, mlp_dim=64)).eval()
    pts = make_point_clouds(4, PointCloudConfig(num_points=64)).points
    out = enc(pts)
    assert out.last_hidden_state.shape == (4, 9, 32) and out.pooled.shape == (4, 32)
    assert out.centers.shape == (4, 8, 3) and out.groups.shape == (4, 8, 8, 3)
    perm = torch.cat([torch.zeros(1, dtype=torch.long), torch.randperm(63) + 1])  # keep the FPS start point first
    assert torch.allclose(enc(pts[:, perm]).pooled, out.pooled, atol=1e-5)
    out.pooled.sum().backward()
    assert enc.tokenizer.first[0].weight.grad is not None


@pytest.mark.parametrize(
    "bad, match",
    [
        (torch.full((1, 64, 3), float("nan")), "NaN"),
        (torch.randn(1, 10, 3), "P=10.*num_groups=16.*16"),  # fewer points than groups
        (torch.randn(1, 64, 2), r"\(B, P, 3\)"),
        (torch.randn(64, 3), r"\(B, P, 3\)"),
        (torch.zeros(0, 64, 3), "empty"),
    ],
)
def test_point_encoder_rejects_bad_clouds(bad, match):
    with pytest.raises(ValueError, match=match):
        PointEncoder()(bad)


def test_fps_and_knn_reject_bad_sizes():
    pts = torch.randn(1, 10, 3)
    with pytest.raises(ValueError, match="num_samples=20.*P=10"):
        farthest_point_sampling(pts, 20)
    with pytest.raises(ValueError, match="k=11.*P=10"):
        knn_group(pts, pts[:, :2], 11)
    with pytest.raises(TypeError):
        farthest_point_sampling(pts.numpy(), 2)
    with pytest.raises(TypeError):
        farthest_point_sampling(pts.long(), 2)
    with pytest.raises(ValueError, match="pooling"):
        PointEncoderConfig(pooling="max")


def test_surface_sampling_lies_on_the_surfaces():
    s = sample_surface("sphere", 500, 2)
    assert np.allclose(np.linalg.norm(s, axis=-1), 1.0)
    c = sample_surface("cube", 500)
    assert np.allclose(np.abs(c).max(axis=-1), 1.0)
    t = sample_surface("torus", 500)
    ring = np.hypot(t[..., 0], t[..., 1]) - pdata.TORUS_MAJOR
    assert np.allclose(np.hypot(ring, t[..., 2]), pdata.TORUS_MINOR)
    cyl = sample_surface("cylinder", 2000)
    rad = np.hypot(cyl[..., 0], cyl[..., 1])
    on_side = np.isclose(rad, pdata.CYLINDER_RADIUS) | np.isclose(np.abs(cyl[..., 2]), pdata.CYLINDER_HEIGHT / 2)
    assert on_side.all()
    side_share = np.mean(np.abs(cyl[..., 2]) < pdata.CYLINDER_HEIGHT / 2 - 1e-9)
    r, h = pdata.CYLINDER_RADIUS, pdata.CYLINDER_HEIGHT
    assert abs(side_share - (2 * r * h) / (2 * r * h + 2 * r * r)) < 0.05  # area-weighted parts
    cone = sample_surface("cone", 500)
    r, h = pdata.CONE_RADIUS, pdata.CONE_HEIGHT
    rad = np.hypot(cone[..., 0], cone[..., 1])
    on = np.isclose(cone[..., 2], -h / 2) | np.isclose(rad, r * (h / 2 - cone[..., 2]) / h)
    assert on.all()
    with pytest.raises(ValueError, match="solid"):
        sample_surface("pyramid", 10)


def test_rotations_are_proper_and_clouds_vary_in_pose_and_scale():
    rot = random_rotations(50, np.random.default_rng(0))
    assert np.allclose(rot @ rot.transpose(0, 2, 1), np.eye(3), atol=1e-10)
    assert np.allclose(np.linalg.det(rot), 1.0)
    batch = make_point_clouds(40, PointCloudConfig(num_points=128, noise=0.0), seed=1)
    again = make_point_clouds(40, PointCloudConfig(num_points=128, noise=0.0), seed=1)
    assert torch.equal(batch.points, again.points)
    assert batch.points.shape == (40, 128, 3) and batch.labels.shape == (40,)
    assert np.bincount(batch.labels.numpy(), minlength=5).tolist() == [8] * 5  # balanced
    norms = batch.points.norm(dim=-1).amax(dim=1)
    assert (norms >= 0.6 - 1e-5).all() and (norms <= 1.0 + 1e-5).all() and norms.std() > 0.05
    assert batch.names[0] == SOLIDS[batch.labels[0]]
    pts, lab = PointCloudDataset(3, seed=0)[2]
    assert pts.shape == (256, 3) and lab.dim() == 0


def test_point_cloud_config_rejects_bad_values():
    with pytest.raises(ValueError, match="unknown"):
        PointCloudConfig(solids=("pyramid",))
    with pytest.raises(ValueError, match="low <= high"):
        PointCloudConfig(scale_range=(1.0, 0.5))
    with pytest.raises(ValueError, match="labels"):
        make_point_clouds(3, labels=[0, 1, 9])
    with pytest.raises(TypeError):
        make_point_clouds(2.5)


def test_helpers_reject_bad_indices_and_mixed_dtypes():
    pts = torch.randn(2, 10, 3)
    with pytest.raises(ValueError, match=r"\[0, P=10\)"):
        gather_points(pts, torch.tensor([[0, 10], [1, 2]]))
    with pytest.raises(ValueError, match="B=2"):
        gather_points(pts, torch.tensor([[0, 1]]))
    with pytest.raises(TypeError, match="dtype"):
        knn_group(pts, pts[:, :2].double(), 3)
    with pytest.raises(ValueError, match="start indices"):
        farthest_point_sampling(pts, 3, torch.tensor([0, 10]))
    with pytest.raises(ValueError, match="NaN"):
        MiniPointNet(8, 8)(torch.full((1, 2, 3, 3), float("nan")))
    assert np.array_equal(random_rotations(3, seed=5), random_rotations(3, seed=5))
