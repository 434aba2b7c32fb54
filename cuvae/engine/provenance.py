"""A run remembers its data: source, path, sizes and a SHA-256 of the examples it trained on.

The record (:meth:`cuvae.data.base.Dataset.record`) goes into ``config.json`` and the
checkpoint. A resumed run reads its data from the recorded place (unless ``--data-dir``
says otherwise) and refuses to go on when the fingerprint differs, naming both. Runs
written before the record existed have none and are not checked.
"""

from __future__ import annotations

from pathlib import Path

from cuvae.errors import CuvaeError


def data_dir_for_resume(record: dict | None, data_dir, run_dir):
    """Where a resumed run (or an evaluation of it) reads its data: ``data_dir`` if given, else the recorded place."""
    if data_dir is not None or not record:
        return data_dir
    name = str(record.get("name", ""))
    path = record.get("path")
    if name.startswith("folder:") or not path:
        return None  # a folder: data set names its own path
    if record.get("subset"):
        from cuvae.data.mnist import SUBSET_DIR

        return SUBSET_DIR  # this installation's copy (the recorded path may be another venv's)
    if not Path(path).exists():
        raise CuvaeError(f"{run_dir} was trained on {record.get('source', name)}, and {path} is gone; "
                         f"pass --data-dir DIR holding the same data")
    return Path(path)


def check_same_data(record: dict | None, dataset, run_dir, flag: str = "--out") -> None:
    """Refuse, in one line naming both, to continue a run on data other than its own."""
    if not record or "sha256" not in record:
        return
    now = dataset.record()
    if now["sha256"] == record["sha256"]:
        return
    where = record.get("path")
    fix = f"pass --data-dir {where} (the run's data)" if where and not record.get("subset") else \
        "make the same data available"
    raise CuvaeError(f"{run_dir} was trained on {record.get('source')} (sha256 {record['sha256'][:12]}), "
                     f"but the data found now is {now['source']} (sha256 {now['sha256'][:12]}); "
                     f"{fix}, or start a new run with another {flag}")
