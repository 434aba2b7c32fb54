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
    each row and ``title`` on top. A row may also be a list whose ``None`` entries leave
    that cell empty (white).
    """
    font = ImageFont.load_default()
    h, w = next(img for row in rows for img in row if img is not None).shape[:2]
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
            if img is None:
                continue
            tile = Image.fromarray(to_uint8(img))
            tile = tile.resize((w * scale, h * scale), Image.NEAREST)
            canvas.paste(tile, (label_w + pad + c * cell_w, y))
    return canvas


def picture_grid(kind: str, images: np.ndarray, epoch: int) -> Image.Image:
    """The picture of a trainer's ``SamplesReady`` event: originals over reconstructions, or 16 prior samples."""
    if kind == "reconstructions":
        half = len(images) // 2
        return grid([images[:half], images[half:]], ["data", "recon"], scale=3,
                    title=f"test digits and reconstructions, epoch {epoch}")
    return grid([images[:8], images[8:16]], scale=3, title=f"samples from the prior, epoch {epoch}")


def save_png(image: Image.Image, path) -> Path:
    """Write atomically (temp file + rename), so a reader never sees half a PNG."""
    from cuvae.errors import CuvaeError

    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        image.save(tmp, format="PNG")
        tmp.replace(path)
    except OSError as err:  # a full or read-only disk: the previous picture stays, no half-written temp file
        try:
            tmp.unlink()
        except OSError:
            pass
        import errno

        fix = "free some space" if err.errno in (errno.ENOSPC, errno.EDQUOT) else "make the folder writable"
        raise CuvaeError(f"cannot write the picture {path}: {err.strerror or err}; {fix}, or write it "
                         "elsewhere (cuvae-show --out FILE, cuvae-evaluate --no-pictures)") from None
    return path


# Ten distinct colours for digit classes (the "tab10" palette), readable on white.
PALETTE = ((31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
           (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207))


def scatter_plot(points: np.ndarray, labels: np.ndarray | None = None, *, title: str | None = None,
                 axes: tuple[str, str] = ("x", "y"), size: int = 560, dot: int = 2) -> Image.Image:
    """A scatter plot of (N, 2) points, coloured by integer ``labels`` (0..9) with a legend.

    Axes run over the points' range (with a 5 % margin); the extreme values are written at
    the ends of each axis and the zero lines are drawn when they fall inside. Points are
    drawn in a shuffled (seeded) order so no class hides the others.
    """
    font = ImageFont.load_default()
    pts = np.asarray(points, np.float64)
    labels = np.zeros(len(pts), int) if labels is None else np.asarray(labels).astype(int)
    left, top, legend_w = 48, 22 if title else 8, 70
    bottom = 36
    canvas = Image.new("RGB", (left + size + legend_w, top + size + bottom), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    if title:
        draw.text((4, 4), title, fill=(0, 0, 0), font=font)
    lo, hi = pts.min(0), pts.max(0)
    span = np.where(hi - lo > 0, hi - lo, 1.0)
    lo, hi = lo - 0.05 * span, hi + 0.05 * span

    def to_px(p):
        u = (p[..., 0] - lo[0]) / (hi[0] - lo[0])
        v = (p[..., 1] - lo[1]) / (hi[1] - lo[1])
        return left + u * size, top + (1 - v) * size

    draw.rectangle((left, top, left + size, top + size), outline=(0, 0, 0))
    for axis in (0, 1):
        if lo[axis] < 0 < hi[axis]:
            zero = np.zeros((1, 2))
            x0, y0 = to_px(zero)
            if axis == 0:
                draw.line((x0[0], top, x0[0], top + size), fill=(210, 210, 210))
            else:
                draw.line((left, y0[0], left + size, y0[0]), fill=(210, 210, 210))
    draw.text((left, top + size + 4), f"{lo[0]:.2f}", fill=(0, 0, 0), font=font)
    right = f"{hi[0]:.2f}"
    draw.text((left + size - font.getlength(right), top + size + 4), right, fill=(0, 0, 0), font=font)
    draw.text((left + size / 2 - font.getlength(axes[0]) / 2, top + size + 18), axes[0], fill=(0, 0, 0), font=font)
    draw.text((4, top), f"{hi[1]:.2f}", fill=(0, 0, 0), font=font)
    draw.text((4, top + size - 12), f"{lo[1]:.2f}", fill=(0, 0, 0), font=font)
    draw.text((4, top + size / 2 - 6), axes[1], fill=(0, 0, 0), font=font)
    xs, ys = to_px(pts)
    order = np.random.default_rng(0).permutation(len(pts))
    for i in order:
        colour = PALETTE[labels[i] % len(PALETTE)]
        draw.rectangle((xs[i] - dot / 2, ys[i] - dot / 2, xs[i] + dot / 2, ys[i] + dot / 2), fill=colour)
    for k, cls in enumerate(sorted(set(labels.tolist()))):
        y = top + 4 + 16 * k
        x = left + size + 10
        draw.rectangle((x, y + 2, x + 10, y + 12), fill=PALETTE[cls % len(PALETTE)])
        draw.text((x + 16, y), str(cls), fill=(0, 0, 0), font=font)
    return canvas


def to_display(images: np.ndarray, image_shape) -> np.ndarray:
    """Flat or channels-first images -> what :func:`grid` draws: (N, H, W) grey or (N, H, W, 3) colour.

    ``image_shape`` is (H, W), (1, H, W) or (3, H, W) (channels first, as the datasets store them).
    """
    shape = tuple(int(v) for v in image_shape)
    arr = np.asarray(images).reshape((-1, *shape))
    if len(shape) == 2:
        return arr
    if shape[0] == 1:
        return arr[:, 0]
    return np.ascontiguousarray(arr.transpose(0, 2, 3, 1))
