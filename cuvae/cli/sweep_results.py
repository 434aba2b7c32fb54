"""A sweep's results: one row per run in results.csv/.json, mean ± std per (model, latent) in results.md
and a rich table."""

from __future__ import annotations

import csv
import io
import json
import math
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

def run_name(model: str, latent: int, seed: int) -> str:
    return f"{model}-z{latent}-s{seed}"


def saved_row(run_dir) -> dict | None:
    """The row a run's last successful evaluation saved (RUN_DIR/result.json), or None."""
    run_dir = Path(run_dir)
    try:
        saved = json.loads((run_dir / RESULT).read_text())
        cfg = json.loads((run_dir / "config.json").read_text())
        row = dict(saved["row"])
        who = {"model": cfg["model"], "latent": cfg["latent"], "seed": cfg["seed"]}
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return {**who, "run_dir": str(run_dir), "status": "earlier", "error": "", **row, **who}


def rebuild_rows(out, rows: list[dict]) -> list[dict]:
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
    table += [row for row in map(saved_row, others) if row is not None]
    return sorted(table, key=lambda r: (r["model"] != "vae", r["model"], r["latent"], r["seed"], r["status"] == "failed"))


# ---- one run (runs in a worker, a Ray task or the driver) --------------------------------------

def summarise(rows: list[dict]) -> list[dict]:
    """One row per (model, latent): mean and (sample) std over the seeds that did not fail."""
    groups: dict = {}
    for r in rows:
        if r["status"] != "failed":
            groups.setdefault((r["model"], r["latent"]), []).append(r)
    out = []
    for (model, latent), rs in sorted(groups.items(), key=lambda kv: (kv[0][0] != "vae", kv[0][0], kv[0][1])):
        s = {"model": model, "latent": latent, "seeds": [r["seed"] for r in rs],
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


def write_results(out: Path, rows: list[dict], iwae_k: int) -> None:
    from cuvae.atomic import atomic_write_bytes

    out = Path(out)
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=CSV_FIELDS, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in CSV_FIELDS})
    atomic_write_bytes(out / "results.csv", lambda f: f.write(buf.getvalue().encode()))
    summary = summarise(rows)
    data = sorted({r["data"] for r in rows if r.get("data")})
    atomic_write_bytes(out / "results.json", lambda f: f.write(
        json.dumps({"runs": rows, "summary": summary, "iwae_k": iwae_k, "data": data}, indent=2).encode()))
    atomic_write_bytes(out / "results.md", lambda f: f.write(markdown_table(summary, rows, iwae_k).encode()))


def _headers(iwae_k):
    return ["model", "latent", "seeds"] + [f"IWAE NLL (k={iwae_k})" if k == "iwae_nll" else h for k, h, _ in SUMMARY]


def markdown_table(summary, rows, iwae_k) -> str:
    heads = _headers(iwae_k)
    lines = ["| " + " | ".join(heads) + " |", "|" + "|".join("---" if i < 1 else "---:" for i in range(len(heads))) + "|"]
    for s in summary:
        cells = [s["model"], str(s["latent"]), str(len(s["seeds"]))] + [_cell(s, k, f) for k, _, f in SUMMARY]
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
    notes += [f"- earlier: {run_name(r['model'], r['latent'], r['seed'])}: from its last successful evaluation"
              for r in rows if r["status"] == "earlier"]
    notes += [f"- failed: {run_name(r['model'], r['latent'], r['seed'])}: {r['error']}" for r in failed]
    return "\n".join(lines + notes) + "\n"


GAUSSIAN_NOTE = ("Gaussian (SSE) runs: test -ELBO, recon and KL use the sum of squared errors, an unnormalised "
                 "log-likelihood; the IWAE NLL uses the normalised density (variance 1/2), which adds D/2 ln pi nats: "
                 "do not subtract one from the other.")


def rich_table(summary, iwae_k, title="sweep", rows=()):
    from rich.table import Table

    gaussian = any(r.get("likelihood") == "gaussian" for r in rows)
    protocols = sorted({s["protocol"] for s in summary if s.get("protocol")})
    caption = "\n".join(([f"protocol: {'; '.join(protocols)}"] if protocols else []) + ([GAUSSIAN_NOTE] if gaussian else []))
    table = Table(title=title, caption=caption or None)
    for i, h in enumerate(_headers(iwae_k)):
        table.add_column(h, justify="left" if i == 0 else "right")
    for s in summary:
        table.add_row(s["model"], str(s["latent"]), str(len(s["seeds"])), *[_cell(s, k, f) for k, _, f in SUMMARY])
    return table
