"""DALI itself judges the format: `fn.readers.mxnet`, the reader NVIDIA's ResNet-50 trains with,
reads every record of a set hpcrepro prepared, and DALI's decoder decodes it (CPU operators here;
benchmarks/dali_read.py runs the same check with the GPU decoder on an H200).

DALI is a dependency of the test command (the `dali` extra): under CI=true a missing DALI fails
this file instead of skipping it.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest

np = pytest.importorskip("numpy")
try:
    from nvidia.dali import fn, pipeline_def, types
except ImportError:
    if os.environ.get("CI") == "true":
        raise
    pytest.skip("DALI is not installed (pip install -e '.[dali]')", allow_module_level=True)

from PIL import Image  # noqa: E402

from hpcrepro.prep.imagenet import Request, prepare  # noqa: E402
from hpcrepro.prep.listing import read_lst  # noqa: E402
from hpcrepro.recordio import read_index  # noqa: E402
from prep_data import SyntheticSet, make_imagenet  # noqa: E402

BATCH = 8


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> tuple[SyntheticSet, Path]:
    """From the nested ILSVRC tars, with the special images (a PNG and a CMYK JPEG under .JPEG
    names, one JPEG large enough to be split across records)."""
    synthetic = make_imagenet(tmp_path_factory.mktemp("imagenet"), classes=4, train_per_class=7,
                              val_per_class=3, max_side=160)  # fmt: skip
    out = tmp_path_factory.mktemp("prepared") / "out"
    prepare(Request(raw=synthetic.tars, out=out, workers=2), log=lambda _: None)
    return synthetic, out


def read_with_dali(folder: Path, split: str, count: int) -> list[tuple[bytes, float, np.ndarray]]:
    """(stored bytes, label, decoded RGB pixels) of the first `count` records, in index order."""

    @pipeline_def(batch_size=BATCH, num_threads=2, device_id=None, prefetch_queue_depth=1)
    def reader():  # type: ignore[no-untyped-def]
        encoded, labels = fn.readers.mxnet(
            path=[str(folder / f"{split}.rec")],
            index_path=[str(folder / f"{split}.idx")],
            random_shuffle=False,
            pad_last_batch=True,
            name="Reader",
        )
        return encoded, labels, fn.decoders.image(encoded, device="cpu", output_type=types.RGB)

    pipe = reader()
    pipe.build()
    assert pipe.reader_meta("Reader")["epoch_size"] == count
    samples: list[tuple[bytes, float, np.ndarray]] = []
    while len(samples) < count:
        encoded, labels, images = pipe.run()
        for i in range(min(BATCH, count - len(samples))):
            label = float(np.asarray(labels.at(i)).reshape(-1)[0])
            samples.append((np.asarray(encoded.at(i)).tobytes(), label, np.asarray(images.at(i))))
    del pipe  # joins DALI's threads before the next split builds its own
    return samples


@pytest.mark.parametrize("split", ["train", "val"])
def test_dalis_mxnet_reader_reads_every_record_as_listed(prepared, split):
    synthetic, folder = prepared
    listed = {line.index: line for line in read_lst(folder / f"{split}.lst")}
    keys = [key for key, _ in read_index(folder / f"{split}.idx")]
    assert len(keys) == len(listed) > 10
    samples = read_with_dali(folder, split, len(keys))
    kinds: set[str] = set()
    for key, (stored, label, pixels) in zip(keys, samples, strict=True):
        line = listed[key]
        source = (synthetic.extracted / split / line.relpath).read_bytes()
        assert stored == source, f"{split} {line.relpath}: bytes differ"
        assert label == line.label, f"{split} {line.relpath}: label {label} != {line.label}"
        with Image.open(io.BytesIO(source)) as image:
            kinds.add(f"{image.format}/{image.mode}")
            reference = np.asarray(image.convert("RGB"))
        assert pixels.shape == reference.shape, line.relpath
        # Both decode with libjpeg-turbo; CMYK and PNG conversions may round differently.
        difference = np.abs(pixels.astype(np.int16) - reference.astype(np.int16))
        assert float(difference.mean()) <= 2.0, (line.relpath, float(difference.mean()))
    if split == "train":  # the specials are in the train split: DALI decoded each kind
        assert {"JPEG/RGB", "JPEG/L", "JPEG/CMYK", "PNG/RGB"} <= kinds, kinds
