"""Tests of scorematch.plotting: PNGs are written and not blank, and the plotted data are the data."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from matplotlib.collections import PathCollection, QuadMesh
from matplotlib.quiver import Quiver
from PIL import Image

from scorematch import plotting
from scorematch.distributions import toy
from scorematch.errors import ConfigError, DataError

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def check_png(path, fig, min_std: float = 8.0) -> np.ndarray:
    """The PNG exists, has the figure's pixel size at plotting.DPI, and is not one flat colour."""
    assert path.is_file()
    with Image.open(path) as img:
        assert img.format == "PNG"
        w, h = img.size
        pixels = np.asarray(img.convert("RGB"), dtype=np.float64)
    fw, fh = fig.get_size_inches() * plotting.DPI
    assert abs(w - fw) <= 2 and abs(h - fh) <= 2
    assert pixels.std() > min_std
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 10
    return pixels


def scatter_by_label(ax, label: str) -> PathCollection:
    found = [c for c in ax.collections if isinstance(c, PathCollection) and c.get_label() == label]
    assert len(found) == 1
    return found[0]


@pytest.fixture(scope="module")
def gmm2d():
    return toy("gmm2d")


@pytest.fixture(scope="module")
def gmm1d():
    return toy("gmm1d")


def test_vector_field_quiver_is_score_over_global_scale(tmp_path, gmm2d):
    data = gmm2d.sample(500, generator=torch.Generator().manual_seed(0))
    path = tmp_path / "field.png"
    fig = plotting.vector_field(gmm2d.score, lims=((-4, 4), (-3, 5)), n=9, data=data, path=path)
    check_png(path, fig)
    ax = fig.axes[0]
    (q,) = [c for c in ax.collections if isinstance(c, Quiver)]
    xs, ys = np.linspace(-4, 4, 9), np.linspace(-3, 5, 9)
    gx, gy = np.meshgrid(xs, ys, indexing="xy")
    np.testing.assert_allclose(q.X, gx.ravel(), atol=1e-12)
    np.testing.assert_allclose(q.Y, gy.ravel(), atol=1e-12)
    pts = torch.tensor(np.stack([q.X, q.Y], 1), dtype=torch.float64)
    s = gmm2d.score(pts).numpy()
    scale = np.linalg.norm(s, axis=1).max()
    np.testing.assert_allclose(np.asarray(q.U), s[:, 0] / scale, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(q.V), s[:, 1] / scale, rtol=1e-5, atol=1e-6)
    assert max(np.hypot(q.U, q.V)) == pytest.approx(1.0, abs=1e-6)
    assert scatter_by_label(ax, "data").get_offsets().shape == (500, 2)
    assert ax.get_xlim() == (-4, 4) and ax.get_ylim() == (-3, 5)
    assert ax.get_aspect() == 1.0


def test_vector_field_explicit_scale_and_module_score(gmm2d):
    net = torch.nn.Linear(2, 2)

    class Net(torch.nn.Module):
        kind = "score"

        def __init__(self):
            super().__init__()
            self.lin = net

        def score(self, x):
            return self.lin(x)

    fig = plotting.vector_field(Net(), n=5, scale=10.0)
    (q,) = [c for c in fig.axes[0].collections if isinstance(c, Quiver)]
    pts = torch.tensor(np.stack([q.X, q.Y], 1), dtype=torch.float32)
    expected = net(pts).detach().numpy() / 10.0
    np.testing.assert_allclose(np.asarray(q.U), expected[:, 0], rtol=1e-5, atol=1e-6)
    with pytest.raises(ConfigError):
        plotting.vector_field(gmm2d.score, n=5, scale=-1.0)


def test_vector_field_energy_model_is_called_with_grad():
    from scorematch.models.mlp import EnergyMLP

    torch.manual_seed(0)
    model = EnergyMLP(2, hidden=16, depth=1)
    fig = plotting.vector_field(model, n=4)
    (q,) = [c for c in fig.axes[0].collections if isinstance(c, Quiver)]
    pts = torch.tensor(np.stack([q.X, q.Y], 1), dtype=torch.float32)
    s = model.score(pts).detach().numpy()
    np.testing.assert_allclose(q.U, s[:, 0] / np.linalg.norm(s, axis=1).max(), rtol=1e-4)


def test_vector_field_autograd_score_falls_back_to_grad_mode(gmm2d):
    def autograd_score(x):
        x = x.detach().requires_grad_(True)
        (g,) = torch.autograd.grad((-0.5 * x.pow(2).sum()), x)
        return g

    fig = plotting.vector_field(autograd_score, n=3)
    (q,) = [c for c in fig.axes[0].collections if isinstance(c, Quiver)]
    pts = np.stack([q.X, q.Y], 1)
    np.testing.assert_allclose(q.U, -pts[:, 0] / np.linalg.norm(pts, axis=1).max(), rtol=1e-5)


def test_compare_fields_panels_and_error_of_last_field(tmp_path, gmm2d):
    offset_mid, offset_last = torch.tensor([0.0, 1.0]), torch.tensor([3.0, 4.0])
    fields = {
        "true": gmm2d.score,
        "mid": lambda x: gmm2d.score(x) + offset_mid.to(x.dtype),
        "learned": lambda x: gmm2d.score(x) + offset_last.to(x.dtype),
    }
    data = gmm2d.sample(300, generator=torch.Generator().manual_seed(1))
    path = tmp_path / "compare.png"
    fig = plotting.compare_fields(fields, lims=((-5, 5), (-5, 5)), n=11, data=data, path=path)
    check_png(path, fig)
    panels = [ax for ax in fig.axes if ax.get_label() != "<colorbar>"]
    assert len(panels) == 4
    assert [ax.get_title() for ax in panels[:3]] == ["true", "mid", "learned"]
    quivers = [next(c for c in ax.collections if isinstance(c, Quiver)) for ax in panels[:3]]
    global_scale = max(
        np.linalg.norm(f(torch.tensor(np.stack([quivers[0].X, quivers[0].Y], 1))).numpy(), axis=1)
        .max() for f in fields.values()
    )
    s_true = gmm2d.score(torch.tensor(np.stack([quivers[0].X, quivers[0].Y], 1))).numpy()
    np.testing.assert_allclose(quivers[0].U, s_true[:, 0] / global_scale, rtol=1e-5, atol=1e-7)
    (mesh,) = [c for c in panels[3].collections if isinstance(c, QuadMesh)]
    np.testing.assert_allclose(np.asarray(mesh.get_array()), 5.0, rtol=1e-6)
    assert "learned" in panels[3].get_title()


def test_compare_fields_error_contours_from_true_score_without_data(gmm2d):
    fields = {"true": gmm2d.score, "learned": lambda x: 0.5 * gmm2d.score(x)}
    fig = plotting.compare_fields(fields, lims=((-5, 5), (-5, 5)), n=6)
    panel = [ax for ax in fig.axes if ax.get_label() != "<colorbar>"][-1]
    (mesh,) = [c for c in panel.collections if isinstance(c, QuadMesh)]
    m = 50
    xs = np.linspace(-5, 5, m)
    gx, gy = np.meshgrid(xs, xs, indexing="xy")
    pts = torch.tensor(np.stack([gx.ravel(), gy.ravel()], 1))
    expected = 0.5 * np.linalg.norm(gmm2d.score(pts).numpy(), axis=1).reshape(m, m)
    np.testing.assert_allclose(np.asarray(mesh.get_array()).reshape(m, m), expected, rtol=1e-4)
    assert len(panel.collections) > 1  # contour lines drawn over the heat map


def test_compare_fields_without_true_has_no_error_panel(gmm2d):
    fig = plotting.compare_fields({"a": gmm2d.score, "b": gmm2d.noisy(1.0).score}, n=5)
    assert len(fig.axes) == 2
    with pytest.raises(ConfigError):
        plotting.compare_fields({})


def test_density_1d_plots_given_grid_values(tmp_path, gmm1d):
    from scorematch.density import density_grid

    grid = density_grid(gmm1d.score, (-4.0, 4.0), n=60)
    path = tmp_path / "density1d.png"
    fig = plotting.density(grid, path=path)
    check_png(path, fig)
    line = fig.axes[0].lines[0]
    np.testing.assert_allclose(line.get_xdata(), grid.coords[0].numpy(), rtol=1e-6)
    np.testing.assert_allclose(line.get_ydata(), grid.density.numpy(), rtol=1e-6)
    coords = torch.linspace(-1, 1, 7)
    fig = plotting.density((coords, coords.abs()))
    np.testing.assert_allclose(fig.axes[0].lines[0].get_ydata(), coords.abs().numpy(), rtol=1e-6)


def test_density_1d_from_log_prob(gmm1d):
    fig = plotting.density(gmm1d.log_prob, lims=(-4, 4), n=101)
    line = fig.axes[0].lines[0]
    x = np.linspace(-4, 4, 101)
    np.testing.assert_allclose(line.get_xdata(), x)
    expected = gmm1d.log_prob(torch.tensor(x)[:, None]).exp().numpy()
    np.testing.assert_allclose(line.get_ydata(), expected, rtol=1e-5, atol=1e-7)
    assert fig.axes[0].get_xlim() == (-4, 4)


def test_density_2d_heat_map_from_log_prob_and_grid(tmp_path, gmm2d):
    path = tmp_path / "density2d.png"
    fig = plotting.density(gmm2d.log_prob, lims=((-5, 5), (-4, 4)), n=40, path=path)
    check_png(path, fig)
    (mesh,) = [c for c in fig.axes[0].collections if isinstance(c, QuadMesh)]
    xs, ys = np.linspace(-5, 5, 40), np.linspace(-4, 4, 40)
    gx, gy = np.meshgrid(xs, ys, indexing="xy")  # rows: y, columns: x
    pts = torch.tensor(np.stack([gx.ravel(), gy.ravel()], 1))
    expected = gmm2d.log_prob(pts).exp().numpy().reshape(40, 40)
    np.testing.assert_allclose(np.asarray(mesh.get_array()).reshape(40, 40), expected, rtol=1e-5)
    values = torch.rand(5, 4, generator=torch.Generator().manual_seed(0))
    coords = (torch.linspace(0, 1, 5), torch.linspace(0, 1, 4))
    fig = plotting.density((coords, values))
    (mesh,) = [c for c in fig.axes[0].collections if isinstance(c, QuadMesh)]
    np.testing.assert_allclose(np.asarray(mesh.get_array()).reshape(4, 5), values.numpy().T)
    with pytest.raises(DataError):
        plotting.density((coords, values.T))
    with pytest.raises(ConfigError):
        plotting.density(gmm2d.log_prob)


def test_samples_over_data_scatter_offsets_are_samples(tmp_path, gmm2d):
    g = torch.Generator().manual_seed(2)
    samples, data = gmm2d.sample(400, generator=g), gmm2d.sample(5000, generator=g)
    path = tmp_path / "samples.png"
    fig = plotting.samples_over_data(samples, data, path=path, max_points=1000)
    check_png(path, fig)
    ax = fig.axes[0]
    np.testing.assert_allclose(scatter_by_label(ax, "samples").get_offsets(), samples.numpy())
    shown = np.asarray(scatter_by_label(ax, "data").get_offsets())
    assert shown.shape == (1000, 2)
    idx = np.linspace(0, len(data) - 1, 1000).round().astype(int)
    np.testing.assert_allclose(shown, data.numpy()[idx])


def test_samples_over_data_drops_non_finite_and_1d_histograms(tmp_path, gmm1d):
    samples = torch.tensor([[0.0, 1.0], [float("nan"), 2.0], [3.0, 4.0]])
    fig = plotting.samples_over_data(samples, None)
    labels = [c.get_label() for c in fig.axes[0].collections]
    assert labels == ["samples (1 non-finite dropped)"]
    np.testing.assert_allclose(fig.axes[0].collections[0].get_offsets(), [[0, 1], [3, 4]])
    g = torch.Generator().manual_seed(3)
    path = tmp_path / "samples1d.png"
    fig = plotting.samples_over_data(gmm1d.sample(800, generator=g), gmm1d.sample(800, generator=g),
                                path=path)
    check_png(path, fig)
    assert len(fig.axes[0].patches) == 60 + 1  # data bars and one step outline
    with pytest.raises(DataError):
        plotting.samples_over_data(torch.zeros(10, 3), None)


def test_histogram_steps_heights_and_true_pdf(tmp_path, gmm1d):
    g = torch.Generator().manual_seed(4)
    x0 = 6 * torch.rand(1000, 1, generator=g) - 3
    t = torch.linspace(0, 1, 101).clamp(max=0.5)[:, None, None] * 2
    traj = (1 - t) * x0 + t * gmm1d.sample(1000, generator=g)  # uniform -> p, shape (101, n, 1)
    path = tmp_path / "hist.png"

    def pdf(x):
        return gmm1d.log_prob(x[:, None]).exp()

    fig = plotting.histogram_steps(traj, [0, 10, 50, 100], true_pdf=pdf, path=path)
    check_png(path, fig)
    assert [ax.get_title() for ax in fig.axes] == ["step 0", "step 10", "step 50", "step 100"]
    for ax, k in zip(fig.axes, [0, 10, 50, 100], strict=True):
        heights, edges, _ = ax.patches[0].get_data()
        counts, _ = np.histogram(traj[k, :, 0].numpy(), bins=edges)
        np.testing.assert_allclose(heights, counts / (1000 * np.diff(edges)), rtol=1e-6)
        line = ax.lines[0]
        expected = pdf(torch.tensor(line.get_xdata())).numpy()
        np.testing.assert_allclose(line.get_ydata(), expected, rtol=1e-5, atol=1e-8)
    heights0 = fig.axes[0].patches[0].get_data()[0]
    assert heights0.max() < 0.4  # uniform start on [-3, 3]: about 1/6
    assert fig.axes[-1].patches[0].get_data()[0].max() > 0.5  # sharp modes after 100 steps
    fig = plotting.histogram_steps(traj[:, :, 0], [-1], trajectory_every=5)
    assert fig.axes[0].get_title() == "step 500"
    with pytest.raises(ConfigError):
        plotting.histogram_steps(traj, [101])


def test_trajectories_paths_and_markers(tmp_path, gmm2d):
    g = torch.Generator().manual_seed(5)
    x0 = 8 * torch.rand(50, 2, generator=g) - 4
    traj = torch.cat([x0[None], x0 + 0.3 * torch.randn(40, 50, 2, generator=g).cumsum(0)])
    path = tmp_path / "traj.png"
    fig = plotting.trajectories(traj, data=gmm2d.sample(500, generator=g), n_chains=7, path=path)
    check_png(path, fig)
    ax = fig.axes[0]
    assert len(ax.lines) == 7
    for i, line in enumerate(ax.lines):
        np.testing.assert_allclose(np.stack(line.get_data(), 1), traj[:, i].numpy())
    np.testing.assert_allclose(scatter_by_label(ax, "start").get_offsets(), traj[0, :7].numpy())
    np.testing.assert_allclose(scatter_by_label(ax, "end").get_offsets(), traj[-1, :7].numpy())
    with pytest.raises(DataError):
        plotting.trajectories(torch.zeros(3, 4, 1))


def constant_images(n: int, c: int, h: int, w: int) -> torch.Tensor:
    """Image k is constant, 8-bit value 10 (k + 1) in channel 0 (k-dependent others for RGB)."""
    v = torch.tensor([[10 * (k + 1), 200 - 7 * k, 3 * k] for k in range(n)], dtype=torch.float64)
    return (v[:, :c, None, None] / 255).expand(n, c, h, w).clone()


@pytest.mark.parametrize("c", [1, 3])
def test_save_image_grid_places_image_k_in_its_cell(tmp_path, c):
    n, h, w, nrow, pad = 7, 5, 6, 3, 2
    images = constant_images(n, c, h, w)
    path = plotting.save_image_grid(images, tmp_path / "grid.png", nrow=nrow, upscale=1)
    with Image.open(path) as img:
        assert img.mode == ("L" if c == 1 else "RGB")
        pixels = np.asarray(img).reshape(img.size[1], img.size[0], c)
    rows = math.ceil(n / nrow)
    assert pixels.shape[:2] == (pad + rows * (h + pad), pad + nrow * (w + pad))
    expected = np.round(images[:, :, 0, 0].numpy() * 255)
    for k in range(n):
        r, col = divmod(k, nrow)
        cell = pixels[pad + r * (h + pad):pad + r * (h + pad) + h,
                      pad + col * (w + pad):pad + col * (w + pad) + w]
        assert (cell == expected[k]).all()
    assert (pixels[:pad] == 255).all() and (pixels[:, :pad] == 255).all()
    assert (pixels[pad + 2 * (h + pad):, pad + 1 * (w + pad):] == 255).all()  # empty cells
    big = plotting.save_image_grid(images, tmp_path / "big.png", nrow=nrow, upscale=3)
    with Image.open(big) as img:
        assert img.size == (3 * pixels.shape[1], 3 * pixels.shape[0])


def test_image_grid_figure_shows_the_grid(tmp_path):
    images = constant_images(10, 3, 8, 8)
    path = tmp_path / "images.png"
    fig = plotting.image_grid(images, nrow=4, path=path, title="samples")
    check_png(path, fig, min_std=5.0)
    ax = fig.axes[0]
    shown = np.asarray(ax.images[0].get_array())
    np.testing.assert_allclose(shown, plotting.make_grid(images, nrow=4))
    r, col = divmod(6, 4)
    np.testing.assert_allclose(shown[2 + r * 10 + 4, 2 + col * 10 + 4], images[6, :, 0, 0].numpy())
    assert ax.get_title() == "samples"
    grey = plotting.image_grid(torch.rand(4, 1, 6, 6))
    assert grey.axes[0].images[0].get_array().ndim == 2
    with pytest.raises(DataError):
        plotting.image_grid(torch.rand(4, 2, 6, 6))


def test_annealing_rows_one_row_per_level(tmp_path):
    levels, n, h = 5, 10, 6
    sigmas = [5.0, 2.0, 1.0, 0.5, 0.1]
    rows = torch.arange(levels + 2, dtype=torch.float64) / (levels + 2)
    snaps = rows[:, None, None, None, None].expand(levels + 2, n, 1, h, h).clone()
    snaps[:, :, :, :3] = 1.0 - snaps[:, :, :, :3]
    path = tmp_path / "anneal.png"
    fig = plotting.annealing_rows(snaps, path=path, n_per_row=4, sigmas=sigmas)
    check_png(path, fig, min_std=5.0)
    ax = fig.axes[0]
    grid = np.asarray(ax.images[0].get_array())
    assert grid.shape == (2 + (levels + 2) * (h + 2), 2 + 4 * (h + 2))
    for r in range(levels + 2):
        for col in range(4):
            assert grid[2 + r * (h + 2) + h - 1, 2 + col * (h + 2)] == pytest.approx(float(rows[r]))
    labels = [t.get_text() for t in ax.get_yticklabels()]
    assert labels[0] == "init" and labels[-1] == "denoised" and len(labels) == levels + 2
    fig = plotting.annealing_rows(snaps, n_per_row=2, max_rows=3)
    assert len(fig.axes[0].get_yticklabels()) == 3
    with pytest.raises(DataError):
        plotting.annealing_rows(snaps, sigmas=[1.0, 0.5])


def test_loss_curves_running_mean_and_scale(tmp_path):
    g = torch.Generator().manual_seed(6)
    steps = np.arange(0, 2000, 10)
    noise = 1 + 0.3 * torch.rand(3, len(steps), generator=g).numpy()
    losses = {f"sigma={s}": (np.exp(-steps / 500) + 0.1 * s) * noise[s - 1] for s in (1, 2, 3)}
    path = tmp_path / "loss.png"
    fig = plotting.loss_curves(steps, losses, path=path, window=10)
    check_png(path, fig)
    ax = fig.axes[0]
    assert ax.get_yscale() == "log"
    smooth = [ln for ln in ax.lines if not ln.get_label().startswith("_")]
    assert [ln.get_label() for ln in smooth] == list(losses)
    y = losses["sigma=2"]
    expected = np.array([y[max(0, i - 9):i + 1].mean() for i in range(len(y))])
    np.testing.assert_allclose(smooth[1].get_ydata(), expected, rtol=1e-10)
    np.testing.assert_allclose(smooth[1].get_xdata(), steps)
    fig = plotting.loss_curves(None, {"ism": [-1.0, -2.0, float("nan"), -3.0]}, window=2)
    assert fig.axes[0].get_yscale() == "linear"
    np.testing.assert_allclose(fig.axes[0].lines[1].get_ydata(), [-1.0, -1.5, -2.0, -3.0])
    with pytest.raises(DataError):
        plotting.loss_curves([1, 2], {"a": [1.0, 2.0, 3.0]})


def test_ax_argument_draws_into_callers_figure(gmm2d):
    from matplotlib.figure import Figure

    fig = Figure()
    ax1, ax2 = fig.subplots(1, 2)
    out = plotting.vector_field(gmm2d.score, n=4, ax=ax1, title="given")
    assert out is fig and ax1.get_title() == "given"
    assert plotting.samples_over_data(gmm2d.sample(10), None, ax=ax2) is fig


@pytest.mark.parametrize("n, side, nrow, k", [(36, 8, 6, 11), (4, 28, 2, 3), (100, 28, 10, 3), (9, 32, 3, 3),
                                              (4, 100, 2, 1), (400, 8, 20, 10)])
def test_saved_grids_are_enlarged_by_whole_pixels(tmp_path, n, side, nrow, k):
    """upscale="auto" (the default): each image at least 84 pixels on its side (a 28 x 28 digit 3x,
    8 x 8 digits 11x), the grid at most 2048 pixels (400 digits of 8 x 8: 10x, not 11x), every
    pixel of the 1:1 grid a k x k block of the same value."""
    images = torch.rand(n, 1, side, side, generator=torch.Generator().manual_seed(n))
    one = plotting.save_image_grid(images, tmp_path / "one.png", nrow=nrow, upscale=1)
    auto = plotting.save_image_grid(images, tmp_path / "auto.png", nrow=nrow)
    with Image.open(one) as a, Image.open(auto) as b:
        small, big = np.asarray(a), np.asarray(b)
    g = 2 + nrow * (side + 2)
    assert small.shape == (g, g) and big.shape == (k * g, k * g)
    assert max(big.shape) <= 2048
    np.testing.assert_array_equal(big, small.repeat(k, 0).repeat(k, 1))
    with pytest.raises(ConfigError, match="upscale"):
        plotting.save_image_grid(images, tmp_path / "bad.png", upscale=0)
