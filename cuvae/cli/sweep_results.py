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
              "examples_per_s", "protocol", "run_dir", "error")
# columns of the summary table: (key, header, format)
SUMMARY = (("test_loss", "test -ELBO", ".2f"), ("test_recon", "recon", ".2f"), ("test_kl", "KL", ".2f"),
           ("iwae_nll", "IWAE NLL", ".2f"), ("active_units", "active", ".1f"), ("sharpness", "sharp recon", ".3f"),
           ("sharpness_samples", "sharp samples", ".3f"), ("mutual_info", "MI", ".2f"),
           ("marginal_kl", "marginal KL", ".2f"), ("train_seconds", "train s", ".0f"), ("examples_per_s", "ex/s", ",.0f"))

def run_name(model: str, latent: int, seed: int) -> str:
    return f"{model}-z{latent}-s{seed}"


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
    atomic_write_bytes(out / "results.json", lambda f: f.write(
        json.dumps({"runs": rows, "summary": summary, "iwae_k": iwae_k}, indent=2).encode()))
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
    protocols = sorted({r.get("protocol") or "continuous" for r in rows if r["status"] != "failed"})
    if protocols:
        notes.append(f"Protocol: {'; '.join(protocols)}.")
    notes += [f"- failed: {run_name(r['model'], r['latent'], r['seed'])}: {r['error']}" for r in failed]
    return "\n".join(lines + notes) + "\n"


def rich_table(summary, iwae_k, title="sweep"):
    from rich.table import Table

    protocols = sorted({s["protocol"] for s in summary if s.get("protocol")})
    table = Table(title=title, caption=f"protocol: {'; '.join(protocols)}" if protocols else None)
    for i, h in enumerate(_headers(iwae_k)):
        table.add_column(h, justify="left" if i == 0 else "right")
    for s in summary:
        table.add_row(s["model"], str(s["latent"]), str(len(s["seeds"])), *[_cell(s, k, f) for k, _, f in SUMMARY])
    return table
