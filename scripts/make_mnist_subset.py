#!/usr/bin/env python3
"""Write the bundled MNIST subset into cuvae/data/datasets/mnist-subset/.

Usage: python scripts/make_mnist_subset.py SRC_DIR [--train 10000] [--test 2000]

SRC_DIR holds the four standard MNIST IDX files (.gz or raw). The first N train
and first M test digits are written as the four standard-named IDX gzip files
(level 9, mtime 0, no embedded name: byte-for-byte reproducible), plus README.md.
"""

from __future__ import annotations

import argparse
import gzip
import io
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from cuvae.data import FILES, SUBSET_DIR, _complete, read_idx  # noqa: E402
from cuvae.errors import CuvaeError  # noqa: E402

README = """\
# Bundled MNIST subset

The first {n_train:,} training and the first {n_test:,} test digits of MNIST
(images and labels, in the original order), as the four standard IDX gzip files.
cuvae falls back to it when no full copy of MNIST is found locally and none can
be downloaded, so that it runs offline out of the box. Get the full set
(60,000 / 10,000) with `--data-dir DIR`, `CUVAE_DATA_DIR`, or by running once
with network access.

Made by `scripts/make_mnist_subset.py` from the official files (payload SHA-256
of the sources are listed in `cuvae/data.py`).

## Licence

MNIST is by Yann LeCun, Corinna Cortes and Christopher J.C. Burges
(http://yann.lecun.com/exdb/mnist/), available under the Creative Commons
Attribution-Share Alike 3.0 licence (CC BY-SA 3.0,
https://creativecommons.org/licenses/by-sa/3.0/). This subset is a
redistribution of part of it under the same licence.
"""


def idx_bytes(arr) -> bytes:
    magic = 0x00000803 if arr.ndim == 3 else 0x00000801
    head = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in arr.shape)
    return head + arr.astype("uint8").tobytes()


def write_gz(path: Path, payload: bytes) -> None:
    buf = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buf, compresslevel=9, mtime=0) as gz:
        gz.write(payload)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(buf.getvalue())
    tmp.replace(path)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("src_dir", type=Path)
    ap.add_argument("--train", type=int, default=10_000)
    ap.add_argument("--test", type=int, default=2_000)
    ap.add_argument("--out", type=Path, default=SUBSET_DIR)
    args = ap.parse_args(argv)
    try:
        files = _complete(args.src_dir)
        if files is None:
            raise CuvaeError(f"{args.src_dir} does not hold the four MNIST IDX files")
        args.out.mkdir(parents=True, exist_ok=True)
        for stem in FILES:
            n = args.train if stem.startswith("train") else args.test
            arr = read_idx(files[stem])
            if n > len(arr):
                raise CuvaeError(f"{files[stem]} has only {len(arr):,} examples, asked for {n:,}")
            write_gz(args.out / f"{stem}.gz", idx_bytes(arr[:n]))
            print(f"wrote {args.out / (stem + '.gz')} ({n:,} examples)")
        (args.out / "README.md").write_text(README.format(n_train=args.train, n_test=args.test))
    except CuvaeError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
