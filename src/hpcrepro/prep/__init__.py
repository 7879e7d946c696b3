"""ImageNet → MXNet RecordIO, byte-identical to `im2rec.py --pass-through`; sharded, resumable."""
