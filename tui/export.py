"""Export what is on screen as a PNG (through cuvae.measure.render) into the run directory, named so
nothing is overwritten, with the sampling temperature and seed in the title and the name."""

from __future__ import annotations

from pathlib import Path


def main_rows(recon, samples):
    """(rows, labels, title) for the main screen: the pairs on screen, then the samples in rows of 8."""
    rows, labels = [], []
    if recon is not None:
        rows += [recon[0], recon[1]]
        labels += ["data", "recon"]
    if samples is not None:
        s = samples[0]
        for a in range(0, len(s), 8):
            rows.append(s[a:a + 8])
            labels.append("samples" if a == 0 else "")
    return rows, labels, "reconstructions and samples"


def export_png(rows, labels, title: str, latent: int, epoch: int, view: str, folder, *, temperature: float = 1.0,
               seed: int = 0) -> Path:
    """Write ``cuvae-z{latent}-epoch{epoch}-{view}-T{temperature}[-k].png`` into folder (the run directory)."""
    from cuvae.measure.render import grid, save_png

    folder = Path(folder)
    name = f"cuvae-z{latent}-epoch{epoch}-{view}-T{temperature:.1f}"
    path, k = folder / f"{name}.png", 1
    while path.exists():
        k += 1
        path = folder / f"{name}-{k}.png"
    title = f"{title}, z={latent}, epoch {epoch}, samples at T={temperature:.1f} seed {seed}"
    return save_png(grid(rows, labels, scale=3, title=title), path)


def export_screen(app) -> None:
    """``e``: the top screen's digits (or the main screen's) as a PNG in the run directory."""
    screen = app.screen
    if hasattr(screen, "export_rows"):
        found, view = screen.export_rows(), type(screen).__name__.replace("Screen", "").lower()
    elif app.view is not None:
        recon, samples = (app.main.query_one(f"#{name}").grid for name in ("recon", "samples"))
        found, view = main_rows(recon, samples), "main"
    else:
        found = None
    if not found or not found[0]:
        app.notify("nothing to export yet: wait for the first epoch", severity="warning")
        return
    rows, labels, title = found
    p = app.prepared
    epoch = p.resumed_epoch if app.read_only else (app.curves.epochs or [{"epoch": 0}])[-1]["epoch"]
    try:
        path = export_png(rows, labels, title, app.latent, epoch, view, p.run_dir,
                          temperature=app.temperature, seed=app.sample_seed)
    except OSError as err:
        app.notify(f"could not write the PNG into {p.run_dir}: {err.strerror}", severity="error")
        return
    app.notify(f"saved {path}")
