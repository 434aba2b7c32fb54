"""A sweep's results: one row per run in results.csv/.json, mean ± std over seeds per configuration
(model, latent and every other axis the sweep varies) in results.md and a rich table."""

from __future__ import annotations

import csv
import io
import json
import math
import re
from pathlib import Path

CSV_FIELDS = ("model", "latent", "seed", "status", "epochs", "test_loss", "test_recon", "test_kl", "iwae_nll", "iwae_k",
              "active_units", "sharpness", "sharpness_samples", "mutual_info", "marginal_kl", "train_seconds",
              "examples_per_s", "protocol", "run_dir", "error", "eval_seed", "likelihood", "data")
RESULT = "result.json"  # each run's saved evaluation: {"key": ..., "row": ...}
# columns of the summary table: (key, header, format)
SUMMARY = (("test_loss", "test -ELBO", ".2f"), ("test_recon", "recon", ".2f"), ("test_kl", "KL", ".2f"),
           ("iwae_nll", "IWAE NLL", ".2f"), ("active_units", "active", ".1f"), ("sharpness", "sharp recon", ".3f"),
           ("sharpness_samples", "sharp samples", ".3f"), ("mutual_info", "MI", ".2f"),
           ("marginal_kl", "marginal KL", ".2f"), ("train_seconds", "train s", ".0f"), ("examples_per_s", "ex/s", ",.0f"))

def axis_text(value) -> str:
    """An axis value as the tables and run names show it: 0.0003, tanh, 256x128."""
    if isinstance(value, (list, tuple)):
        return "x".join(map(axis_text, value))
    if isinstance(value, float):
        return format(value, "g")
    return str(value)


def run_name(model: str, latent: int, seed: int, axes=()) -> str:
    """``vae-z8-s1``; with other axes (``[(key, value), ...]``) between latent and seed: ``vae-z8-lr_0.0003-s1``.
    Only the axes a sweep varies are named, so sweeps over latent sizes and seeds keep their old names."""
    middle = "".join(f"-{key}_{re.sub(r'[^A-Za-z0-9.+-]', '_', axis_text(value))}" for key, value in axes)
    return f"{model}-z{latent}{middle}-s{seed}"


def _key(value):
    """A hashable, sortable stand-in for an axis value (lists become tuples; a missing value sorts last)."""
    return (value is None, tuple(value) if isinstance(value, list) else value)


def saved_row(run_dir, axes=()) -> dict | None:
    """The row a run's last successful evaluation saved (RUN_DIR/result.json), or None."""
    run_dir = Path(run_dir)
    try:
        saved = json.loads((run_dir / RESULT).read_text())
        cfg = json.loads((run_dir / "config.json").read_text())
        row = dict(saved["row"])
        who = {"model": cfg["model"], "latent": cfg["latent"], "seed": cfg["seed"], **{k: cfg.get(k) for k in axes}}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    return {**who, "run_dir": str(run_dir), "status": "earlier", "error": "", **row, **who}


def rebuild_rows(out, rows: list[dict], axes=()) -> list[dict]:
    """The rows the results tables show, rebuilt from the runs that exist under ``out``.

    This sweep's rows; a run that failed now but was evaluated before keeps its earlier row
    (status "earlier"), with the failure listed beside it; runs of earlier sweeps into the
    same folder that this one did not touch are kept too. A failure never replaces a good row.
    """
    out = Path(out)
    seen = {str(Path(r["run_dir"]).resolve()) for r in rows}
    table = []
    for r in rows:
        if r["status"] == "failed":
            earlier = saved_row(r["run_dir"])
            if earlier is not None:
                table.append(earlier)
        table.append(r)
    others = sorted(d for d in out.iterdir() if d.is_dir() and str(d.resolve()) not in seen) if out.is_dir() else []
    table += [row for row in (saved_row(d, axes) for d in others) if row is not None]
    return sorted(table, key=lambda r: (r["model"] != "vae", r["model"], r["latent"], *[_key(r.get(k)) for k in axes],
                                        r["seed"], r["status"] == "failed"))


# ---- one run (runs in a worker, a Ray task or the driver) --------------------------------------

def summarise(rows: list[dict], axes=()) -> list[dict]:
    """One row per configuration (model, latent and the other ``axes``): mean and (sample) std over the
    seeds that did not fail."""
    groups: dict = {}
    for r in rows:
        if r["status"] != "failed":
            key = (r["model"] != "vae", r["model"], r["latent"], *[_key(r.get(k)) for k in axes])
            groups.setdefault(key, []).append(r)
    out = []
    for _, rs in sorted(groups.items(), key=lambda kv: kv[0]):
        s = {"model": rs[0]["model"], "latent": rs[0]["latent"], **{k: rs[0].get(k) for k in axes},
             "seeds": [r["seed"] for r in rs],
             "protocol": "; ".join(sorted({r.get("protocol") or "continuous" for r in rs}))}
        for key, _, _ in SUMMARY:
            vals = [r[key] for r in rs if r.get(key) is not None]
            if vals:
                mean = sum(vals) / len(vals)
                std = math.sqrt(sum((v - mean) ** 2 for v in vals) / (len(vals) - 1)) if len(vals) > 1 else 0.0
                s[key], s[key + "_std"] = mean, std
            else:
                s[key], s[key + "_std"] = None, None
        out.append(s)
    return out


def _cell(s, key, fmt) -> str:
    if s[key] is None:
        return "-"
    text = format(s[key], fmt)
    return f"{text} ± {format(s[key + '_std'], fmt)}" if len(s["seeds"]) > 1 else text


def csv_fields(axes=()) -> tuple:
    """The CSV columns: the axes the sweep varies come right after the latent size."""
    return CSV_FIELDS[:2] + tuple(k for k in axes if k not in CSV_FIELDS) + CSV_FIELDS[2:]


def write_results(out: Path, rows: list[dict], iwae_k: int, axes=()) -> None:
    from cuvae.atomic import atomic_write_bytes

    out = Path(out)
    buf = io.StringIO()
    fields = csv_fields(axes)
    w = csv.DictWriter(buf, fieldnames=fields, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: "" if r.get(k) is None else axis_text(r[k]) if k in axes else r[k] for k in fields})
    atomic_write_bytes(out / "results.csv", lambda f: f.write(buf.getvalue().encode()))
    summary = summarise(rows, axes)
    data = sorted({r["data"] for r in rows if r.get("data")})
    atomic_write_bytes(out / "results.json", lambda f: f.write(
        json.dumps({"runs": rows, "summary": summary, "iwae_k": iwae_k, "data": data, "axes": list(axes)},
                   indent=2).encode()))
    atomic_write_bytes(out / "results.md", lambda f: f.write(markdown_table(summary, rows, iwae_k, axes).encode()))


def _headers(iwae_k, axes=()):
    return (["model", "latent", *axes, "seeds"]
            + [f"IWAE NLL (k={iwae_k})" if k == "iwae_nll" else h for k, h, _ in SUMMARY])


def _who(s, axes) -> list[str]:
    return [s["model"], str(s["latent"]), *["-" if s.get(k) is None else axis_text(s[k]) for k in axes],
            str(len(s["seeds"]))]


def markdown_table(summary, rows, iwae_k, axes=()) -> str:
    heads = _headers(iwae_k, axes)
    lines = ["| " + " | ".join(heads) + " |", "|" + "|".join("---" if i < 1 else "---:" for i in range(len(heads))) + "|"]
    for s in summary:
        cells = _who(s, axes) + [_cell(s, k, f) for k, _, f in SUMMARY]
        lines.append("| " + " | ".join(cells) + " |")
    failed = [r for r in rows if r["status"] == "failed"]
    notes = ["", f"Mean ± sample standard deviation over seeds. Losses in nats per test example; IWAE with k={iwae_k} "
                 "importance samples; sharpness = Laplacian energy relative to the test digits' own (1.0 = as sharp as "
                 "the data); MI + marginal KL = KL (ELBO surgery on the test set)."]
    if any(r.get("likelihood") == "gaussian" for r in rows):
        notes.append(GAUSSIAN_NOTE)
    data = sorted({r["data"] for r in rows if r.get("data")})
    if data:
        notes.append("Data: " + "; ".join(data) + ".")
    protocols = sorted({r.get("protocol") or "continuous" for r in rows if r["status"] != "failed"})
    if protocols:
        notes.append(f"Protocol: {'; '.join(protocols)}.")
    notes += [f"- earlier: {Path(r['run_dir']).name}: from its last successful evaluation"
              for r in rows if r["status"] == "earlier"]
    notes += [f"- failed: {Path(r['run_dir']).name}: {r['error']}" for r in failed]
    return "\n".join(lines + notes) + "\n"


GAUSSIAN_NOTE = ("Gaussian (SSE) runs: test -ELBO, recon and KL use the sum of squared errors, an unnormalised "
                 "log-likelihood; the IWAE NLL uses the normalised density (variance 1/2), which adds D/2 ln pi nats: "
                 "do not subtract one from the other.")


def rich_table(summary, iwae_k, title="sweep", rows=(), axes=()):
    from rich.table import Table

    gaussian = any(r.get("likelihood") == "gaussian" for r in rows)
    protocols = sorted({s["protocol"] for s in summary if s.get("protocol")})
    caption = "\n".join(([f"protocol: {'; '.join(protocols)}"] if protocols else []) + ([GAUSSIAN_NOTE] if gaussian else []))
    table = Table(title=title, caption=caption or None)
    for i, h in enumerate(_headers(iwae_k, axes)):
        table.add_column(h, justify="left" if i == 0 else "right")
    for s in summary:
        table.add_row(*_who(s, axes), *[_cell(s, k, f) for k, _, f in SUMMARY])
    return table
