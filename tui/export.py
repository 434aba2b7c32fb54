"""Export what is on screen as a PNG (through cuvae.measure.render), named so nothing is overwritten."""

from __future__ import annotations

from pathlib import Path


def export_png(rows, labels, title: str, latent: int, epoch: int, view: str, folder: Path | None = None) -> Path:
    """Write ``cuvae-z{latent}-epoch{epoch}-{view}[-k].png`` into folder (default: the current one)."""
    from cuvae.measure.render import grid, save_png

    folder = Path.cwd() if folder is None else Path(folder)
    name = f"cuvae-z{latent}-epoch{epoch}-{view}"
    path, k = folder / f"{name}.png", 1
    while path.exists():
        k += 1
        path = folder / f"{name}-{k}.png"
    return save_png(grid(rows, labels, scale=3, title=f"{title}, z={latent}, epoch {epoch}"), path)
