"""Runs inside the MXNet venv: read a prepared data set with MXNet's own readers, report as JSON.

usage: python mxnet_read.py DATASET_DIR RAW_ROOT OUT_JSON
For each split, `mxnet.recordio.MXIndexedRecordIO` reads every record by key (label, id, bytes
and `mx.image.imdecode` pixels against the source JPEG), then the C++ `mx.io.ImageRecordIter`
reads the whole file in order (label and the 32x32 center crop against the source's decode).
"""

import json
import sys
from pathlib import Path

import mxnet as mx
import numpy as np

CROP = 32


def read_lst(path):
    rows = []
    for line in path.read_text().splitlines():
        index, label, rel = line.split("\t")
        rows.append((int(index), float(label), rel))
    return rows


def center_crop(pixels):
    height, width = pixels.shape[:2]
    top, left = (height - CROP) // 2, (width - CROP) // 2
    return pixels[top : top + CROP, left : left + CROP]


def check_split(dataset, raw, split, problems):
    rows = read_lst(dataset / f"{split}.lst")
    source = {index: (label, raw / split / rel) for index, label, rel in rows}
    record = mx.recordio.MXIndexedRecordIO(
        str(dataset / f"{split}.idx"), str(dataset / f"{split}.rec"), "r"
    )
    indexed = 0
    for key in record.keys:
        header, image = mx.recordio.unpack(record.read_idx(key))
        label, path = source[key]
        original = path.read_bytes()
        if header.label != label or header.id != key or header.flag != 0:
            problems.append(f"{split} {key}: header {header} but .lst says label {label}")
        if image != original:
            problems.append(f"{split} {key}: stored bytes differ from {path}")
        decoded, expected = (
            mx.image.imdecode(image).asnumpy(),
            mx.image.imdecode(original).asnumpy(),
        )
        if decoded.shape != expected.shape or not np.array_equal(decoded, expected):
            problems.append(f"{split} {key}: decoded pixels differ from {path}")
        indexed += 1
    record.close()

    order = [index for index, _, _ in rows]
    iterator = mx.io.ImageRecordIter(
        path_imgrec=str(dataset / f"{split}.rec"),
        data_shape=(3, CROP, CROP),
        batch_size=1,
        shuffle=False,
        preprocess_threads=1,
        prefetch_buffer=1,
    )
    sequential = 0
    for position, batch in enumerate(iterator):
        label, path = source[order[position]]
        got_label = float(batch.label[0].asnumpy()[0])
        if got_label != label:
            problems.append(
                f"{split} record {position}: ImageRecordIter label {got_label} != {label}"
            )
        pixels = batch.data[0].asnumpy()[0].transpose(1, 2, 0)
        expected = center_crop(mx.image.imdecode(path.read_bytes()).asnumpy()).astype(np.float32)
        if not np.array_equal(pixels, expected):
            problems.append(
                f"{split} record {position}: ImageRecordIter pixels differ ({path.name})"
            )
        sequential += 1
    return {"listed": len(rows), "indexed": indexed, "sequential": sequential}


def main():
    dataset, raw, out = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
    problems = []
    splits = {split: check_split(dataset, raw, split, problems) for split in ("train", "val")}
    report = {"mxnet": mx.__version__, "splits": splits, "problems": problems[:20]}
    out.write_text(json.dumps(report, indent=1))
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
