"""PNG overlay montages: layout, colours of the outlines, file size, errors."""

import numpy as np
import pytest
from ICHAnalyzerLib.constants import SUBTYPES
from ICHAnalyzerLib.figures import TILE_PX, render_overlay
from ICHAnalyzerLib.phantom import make_phantom
from PIL import Image


@pytest.fixture(scope="module")
def phantom():
    return make_phantom(seed=0, tilt_deg=20.0)


def test_montage_layout_colours_and_size(phantom, tmp_path):
    overlays = [(phantom.labels == s.label, s.color, s.key) for s in SUBTYPES]
    path = tmp_path / "sub" / "labels.png"
    render_overlay(phantom.ct, overlays, path, slices=list(range(8, 20)), columns=4, title="phantom")
    image = Image.open(path).convert("RGB")
    # 256x256 grid at 0.9 mm -> square tiles of TILE_PX; 12 slices in 4 columns -> 3 rows (+ title, legend)
    assert image.width == 4 * TILE_PX
    assert 3 * TILE_PX < image.height < 3 * TILE_PX + 60
    assert path.stat().st_size < 300_000
    pixels = np.asarray(image).reshape(-1, 3)
    present = {tuple(p) for p in np.unique(pixels, axis=0)}
    for s in SUBTYPES:  # every outline colour is drawn exactly (fixed palette, no adaptive quantization)
        rgb = np.array([round(255 * c) for c in s.color])
        assert min(np.abs(np.array(list(present)) - rgb).sum(axis=1)) == 0, s.key


def test_default_slices_are_those_with_overlay(phantom, tmp_path):
    mask = np.zeros(phantom.ct.shape, bool)
    mask[10:13, 100:150, 100:150] = True
    path = tmp_path / "three.png"
    render_overlay(phantom.ct, [(mask, "green", "box")], path, columns=6)
    assert Image.open(path).width == 3 * TILE_PX  # three slices -> three columns


def test_no_slices_is_an_error(phantom, tmp_path):
    with pytest.raises(ValueError):
        render_overlay(phantom.ct, [], tmp_path / "none.png", slices=[])
