"""scripts/reproduce_burda.py: a one-epoch run of cuvae's column on the bundled subset, and the table's
means over seeds (the figure the acceptance compares), not a timing test."""

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
SUBSET = ROOT / "cuvae" / "data" / "datasets" / "mnist-subset"


def _row(fw, row, seed, nll):
    return {"framework": fw, "row": row, "seed": seed, "epochs": 20, "test_nll": nll, "test_se": 0.3, "iwae_k": 1000,
            "train_seconds": 600.0, "seconds_per_epoch": 30.0, "eval_seconds": 200.0}


def test_table_gives_means_over_seeds_and_per_seed_gaps():
    import reproduce_burda

    text = reproduce_burda.table([_row("cuvae", "vae", 0, 104.0), _row("torch", "vae", 0, 103.6),
                                  _row("cuvae", "vae", 1, 104.4), _row("torch", "vae", 1, 104.8),
                                  _row("cuvae", "iwae5", 0, 101.0), _row("cuvae", "iwae5", 1, 101.2)])
    vae = next(line for line in text.splitlines() if line.startswith("VAE (k=1)") and "86.76" in line)
    assert "104.20 ± 0.30" in vae and "+0.00" in vae and " 0,1 " in vae  # means; (0.4 - 0.4) / 2
    assert "seed 0: 104.00 - 103.60 = +0.40" in text and "seed 1: 104.40 - 104.80 = -0.40" in text
    assert "cuvae: IWAE k=5 - VAE = -3.10 nats" in text  # (101.0 - 104.0 + 101.2 - 104.4) / 2
    assert "torch: IWAE" not in text  # torch trained no IWAE row


def test_one_epoch_of_cuvaes_column_runs_and_records_its_seed(tmp_path, monkeypatch, capsys):
    import reproduce_burda

    results = tmp_path / "results.jsonl"
    monkeypatch.setattr(sys, "argv", ["reproduce_burda.py", "--data-dir", str(SUBSET), "--epochs", "1", "--rows", "vae",
                                      "--frameworks", "cuvae", "--iwae-k", "5", "--seeds", "3", "--threads", "1",
                                      "--out", str(tmp_path / "runs"), "--results", str(results)])
    assert reproduce_burda.main() == 0
    (r,) = [json.loads(line) for line in results.read_text().splitlines()]
    assert r["seed"] == 3 and r["framework"] == "cuvae" and r["epochs"] == 1
    assert 80 < r["test_nll"] < 300  # one epoch on 10k digits (~205): far below untrained (784 ln 2 = 543 nats)
    assert r["protocol"].startswith("binarized")
    assert (tmp_path / "runs" / "vae-e1-s3" / "checkpoint.npz").exists()
    assert "VAE (k=1)" in capsys.readouterr().out
