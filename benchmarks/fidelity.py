"""Fidelity benchmark: simulators vs real choices of held-out ML-100K users (DESIGN.md §8).

A thin script over :mod:`usermirrorer.fidelity`; it takes exactly the options of
``usermirrorer bench fidelity`` (see ``--help``) and writes benchmarks/results/fidelity.{md,json}
plus fidelity_accuracy.png and fidelity_reliability.png.

    python benchmarks/fidelity.py                                # full table
    python benchmarks/fidelity.py --limit 50 --decision-limit 5  # quick look
    python benchmarks/fidelity.py finetune --sft-steps 150       # the direct-mode fine-tune recipe first

Measured on 2 shared CPU cores: see the "Runtime" section of benchmarks/results/fidelity.md.
"""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    from usermirrorer.cli import main as cli_main

    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["finetune"]:
        return cli_main(["bench", "fidelity-finetune", *argv[1:]])
    return cli_main(["bench", "fidelity", *argv])


if __name__ == "__main__":
    sys.exit(main())
