"""`python3 -m hpcrepro.detect [--json] [-o FILE]`: capture this node with only the standard
library and nvidia-ml-py, for machines where the rest of hpcrepro is not installed."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from hpcrepro.detect.describe import describe_node
from hpcrepro.detect.summary import summary_text
from hpcrepro.detect.targets import write_text
from hpcrepro.errors import USER_ERROR_EXIT, UserError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python3 -m hpcrepro.detect",
        description="Describe this node (GPUs through NVML, host).",
    )
    parser.add_argument("--json", action="store_true", help="print the full description as JSON")
    parser.add_argument("-o", "--output", type=Path, help="also write the JSON description here")
    args = parser.parse_args(argv)
    node = describe_node()
    if node.nvml.notice:
        sys.stderr.write(f"notice: {node.nvml.notice}\n")
    text = node.to_json()
    if args.output:
        try:
            write_text(args.output, text, "--output")
        except UserError as error:  # the same message `hpcrepro detect -o` gives
            lines = error.render().splitlines()
            sys.stderr.write(f"error: {lines[0]}\n" + "".join(f"  {ln}\n" for ln in lines[1:]))
            return USER_ERROR_EXIT
    sys.stdout.write(text if args.json else summary_text(node))
    return 0


if __name__ == "__main__":
    sys.exit(main())
