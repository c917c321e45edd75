"""PNG montages of axial CT slices with mask outlines (Pillow only, no matplotlib).

Used for documentation figures (brain mask, hemorrhage segmentations) and quick visual checks.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from scipy import ndimage as ndi

from .volume import CTVolume

TILE_PX = 240  # longest side of one slice tile
FILL_ALPHA = 0.25  # opacity of the translucent fill
GREY_LEVELS = 32  # the windowed image is posterized to this many levels (smaller PNG; 2.5 HU at W 80)
DISPLAY_SMOOTH_PX = 0.7  # Gaussian sigma (input pixels) against noise aliasing when downscaling
FILL_SHADES = 12  # palette entries per overlay colour for its translucent fill
_TEXT = (255, 255, 0)  # slice captions
_LABEL = (255, 255, 255)  # title and legend
MAX_TILES = 24  # default slice selection; a PNG of 24 tiles stays under ~300 KB
_LEGEND_H = 18
_TITLE_H = 20

# Named colours accepted in overlays (besides "#rrggbb").
COLORS: dict[str, tuple[int, int, int]] = {
    "green": (40, 220, 60),
    "red": (230, 30, 30),
    "orange": (245, 150, 25),
    "yellow": (245, 230, 50),
    "blue": (50, 115, 245),
    "purple": (155, 50, 220),
    "cyan": (40, 220, 230),
    "magenta": (230, 40, 200),
}


def _rgb(color: str | tuple[float, float, float] | tuple[int, int, int]) -> tuple[int, int, int]:
    if isinstance(color, str):
        if color.startswith("#") and len(color) == 7:
            return tuple(int(color[i : i + 2], 16) for i in (1, 3, 5))  # type: ignore[return-value]
        return COLORS[color]
    if all(isinstance(c, float) and c <= 1.0 for c in color):
        return tuple(int(round(255 * c)) for c in color)  # type: ignore[return-value]
    return tuple(int(c) for c in color)  # type: ignore[return-value]


def _palette(colors: list[tuple[int, int, int]]) -> Image.Image:
    """Fixed palette: the grey levels, each overlay colour exactly plus its fill blended over greys, and
    the text colours (an adaptive palette can drop a thin outline's colour)."""
    greys = np.round(np.linspace(0, 255, GREY_LEVELS)).astype(int)
    entries = [(int(g), int(g), int(g)) for g in greys] + [_TEXT, _LABEL]
    for color in colors:
        entries.append(tuple(color))
        for g in np.linspace(0, 255, FILL_SHADES):
            entries.append(tuple(int(round((1 - FILL_ALPHA) * g + FILL_ALPHA * c)) for c in color))
    entries = list(dict.fromkeys(entries))[:256]
    flat = [v for rgb in entries for v in rgb]
    palette = Image.new("P", (1, 1))
    palette.putpalette(flat + flat[:3] * (256 - len(entries)))
    return palette


def _windowed(slice_hu: np.ndarray, window: tuple[float, float]) -> np.ndarray:
    center, width = window
    low = center - width / 2.0
    smooth = ndi.gaussian_filter(slice_hu.astype(np.float32), DISPLAY_SMOOTH_PX)
    grey = np.clip((smooth - low) / float(width), 0.0, 1.0)
    step = 255.0 / (GREY_LEVELS - 1)
    return (np.round(grey * (GREY_LEVELS - 1)) * step).astype(np.uint8)


def _tile_size(shape: tuple[int, int, int], spacing: tuple[float, float, float]) -> tuple[int, int]:
    """Tile (width, height) in pixels keeping the physical aspect ratio of a slice."""
    width_mm = shape[2] * spacing[0]
    height_mm = shape[1] * spacing[1]
    scale = TILE_PX / max(width_mm, height_mm)
    return max(1, int(round(width_mm * scale))), max(1, int(round(height_mm * scale)))


def _default_slices(ct: CTVolume, overlays: list[tuple[np.ndarray, tuple[int, int, int], str]]) -> list[int]:
    """Every slice that shows any overlay, else every slice (both thinned to at most ``MAX_TILES``)."""
    shown = np.zeros(ct.shape[0], bool)
    for mask, _, _ in overlays:
        shown |= np.asarray(mask).reshape(ct.shape).any(axis=(1, 2))
    slices = np.flatnonzero(shown) if shown.any() else np.arange(ct.shape[0])
    if len(slices) > MAX_TILES:
        slices = slices[np.linspace(0, len(slices) - 1, MAX_TILES).round().astype(int)]
    return [int(k) for k in slices]


def render_overlay(
    ct: CTVolume,
    overlays: list[tuple[np.ndarray, tuple[int, int, int], str]],
    path: str | Path,
    slices: list[int] | None = None,
    window: tuple[float, float] = (40, 80),
    columns: int = 6,
    title: str | None = None,
) -> None:
    """Write a PNG montage of axial slices (``window`` = (centre, width) HU) with mask outlines.

    ``overlays``: ``(mask [k, j, i] bool or label>0, colour RGB 0-255 or 0-1 floats, legend name)``.
    ``slices``: slice indices to show (default: slices with any overlay, at most ``MAX_TILES``).
    Each slice is drawn in its own plane with its in-plane pixel aspect; slice index and position
    are printed on each tile.
    """
    colors = [_rgb(c) for _, c, _ in overlays]
    masks = [np.asarray(m).reshape(ct.shape) > 0 for m, _, _ in overlays]
    if slices is None:
        slices = _default_slices(ct, overlays)
    if not slices:
        raise ValueError("no slices to render")
    tile_w, tile_h = _tile_size(ct.shape, ct.spacing)
    columns = max(1, min(columns, len(slices)))
    rows = (len(slices) + columns - 1) // columns
    top = _TITLE_H if title else 0
    canvas = Image.new("RGB", (columns * tile_w, top + rows * tile_h + _LEGEND_H), (0, 0, 0))
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default()
    normal = ct.slice_normal
    for n, k in enumerate(slices):
        grey = _windowed(ct.hu[k], window)
        rgb = np.repeat(grey[..., None], 3, axis=2).astype(np.float32)
        for mask, color in zip(masks, colors, strict=True):
            m = mask[k]
            if not m.any():
                continue
            rgb[m] = (1 - FILL_ALPHA) * rgb[m] + FILL_ALPHA * np.asarray(color, np.float32)
        tile = Image.fromarray(rgb.astype(np.uint8)).resize((tile_w, tile_h), Image.BOX)
        tile_arr = np.asarray(tile).copy()
        for mask, color in zip(masks, colors, strict=True):
            m = mask[k]
            if not m.any():
                continue
            small = Image.fromarray(m.astype(np.uint8) * 255).resize((tile_w, tile_h), Image.BILINEAR)
            small = np.asarray(small) >= 128
            edge = small & ~ndi.binary_erosion(small)
            tile_arr[edge] = color
        x0, y0 = (n % columns) * tile_w, top + (n // columns) * tile_h
        canvas.paste(Image.fromarray(tile_arr), (x0, y0))
        z_mm = float(ct.voxel_to_lps([0, 0, k])[0] @ normal)
        draw.text((x0 + 3, y0 + 2), f"k={k} z={z_mm:.0f}", fill=_TEXT, font=font)
    if title:
        draw.text((4, 4), title, fill=_LABEL, font=font)
    x, y = 4, top + rows * tile_h + 3
    for (_, _, name), color in zip(overlays, colors, strict=True):
        draw.rectangle([x, y + 2, x + 10, y + 12], fill=color)
        draw.text((x + 14, y + 1), name, fill=_LABEL, font=font)
        x += 24 + int(draw.textlength(name, font=font))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.quantize(palette=_palette(colors), dither=Image.Dither.NONE).save(path, optimize=True)
