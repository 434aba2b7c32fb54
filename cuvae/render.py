"""Pictures with Pillow: labelled grids of digits, scaled up, grey-scale true to the data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont


def to_uint8(images: np.ndarray) -> np.ndarray:
    return (np.clip(images, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def grid(rows: list[np.ndarray], labels: list[str] | None = None, scale: int = 3, pad: int = 2,
         title: str | None = None) -> Image.Image:
    """Stack rows of images ((N, H, W) grey or (N, H, W, 3) colour, floats in [0, 1]) into one picture.

    Each image is scaled up ``scale`` times with nearest-neighbour (no smoothing, so the
    pixels are the model's), separated by ``pad`` pixels; ``labels`` go to the left of
    each row and ``title`` on top.
    """
    font = ImageFont.load_default()
    h, w = rows[0].shape[1:3]
    cell_h, cell_w = h * scale + pad, w * scale + pad
    label_w = 0
    if labels:
        label_w = max(int(font.getlength(s)) for s in labels) + 8
    title_h = 16 if title else 0
    ncols = max(len(r) for r in rows)
    canvas = Image.new("RGB", (label_w + ncols * cell_w + pad, title_h + len(rows) * cell_h + pad), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    if title:
        draw.text((4, 2), title, fill=(0, 0, 0), font=font)
    for r, row in enumerate(rows):
        y = title_h + pad + r * cell_h
        if labels:
            draw.text((4, y + (cell_h - pad) // 2 - 5), labels[r], fill=(0, 0, 0), font=font)
        for c, img in enumerate(row):
            tile = Image.fromarray(to_uint8(img))
            tile = tile.resize((w * scale, h * scale), Image.NEAREST)
            canvas.paste(tile, (label_w + pad + c * cell_w, y))
    return canvas


def save_png(image: Image.Image, path) -> Path:
    """Write atomically (temp file + rename), so a reader never sees half a PNG."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    image.save(tmp, format="PNG")
    tmp.replace(path)
    return path
