"""Write mllog_facts.json: the facts that catalog tests compare against, from NVIDIA's logs.

Run from the repository root when the research logs change:
    python tests/data/catalog/extract_mllog_facts.py ../shared/research/mlperf-resnet-results
The logs are MLCommons results (Apache-2.0); only a few numbers per result directory are kept.
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

KEYS = (
    "global_batch_size",
    "model_bn_span",
    "lars_opt_base_learning_rate",
    "lars_opt_weight_decay",
    "lars_opt_momentum",
    "lars_opt_learning_rate_warmup_epochs",
    "lars_opt_learning_rate_decay_steps",
)


def facts_of(folder: Path) -> dict[str, object]:
    values: dict[str, object] = {}
    evals: set[int] = set()
    for result in sorted(folder.glob("result_*.txt")):
        for line in result.read_text(encoding="utf-8").splitlines():
            if not line.startswith(":::MLLOG "):
                continue
            event = json.loads(line[len(":::MLLOG ") :])
            if event["key"] in KEYS:
                values.setdefault(event["key"], event["value"])
            elif event["key"] == "eval_accuracy":
                evals.add(int(event["metadata"]["epoch_num"]))
    values["eval_epochs_seen"] = sorted(evals)
    return values


def official_scores(root: Path) -> dict[tuple[str, str, str], float]:
    """(version, submitter, system) -> score in minutes, from the folder's scores.csv."""
    with (root / "scores.csv").open(encoding="utf-8") as handle:
        return {
            (row["version"], row["submitter"], row["system"]): float(row["score_minutes"])
            for row in csv.DictReader(handle)
        }


def main(root: Path) -> None:
    scores = official_scores(root)
    facts = []
    for folder in sorted(root.glob("v*/NVIDIA*/*")):
        version, submitter, name = folder.parts[-3:]
        facts.append(
            {
                "version": "r" + version[1:],
                "result_dir": f"{submitter}/results/{name}",
                "score_minutes": scores[(version, submitter, name)],
                **facts_of(folder),
            }
        )
    out = Path(__file__).with_name("mllog_facts.json")
    out.write_text(json.dumps(facts, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {len(facts)} entries to {out}")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
