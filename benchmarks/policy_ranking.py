"""Policy-ranking benchmark: do simulators order recommenders the way held-out users' logs do?

A thin script over :mod:`usermirrorer.fidelity.policy_ranking`; it takes exactly the options
of ``usermirrorer bench policy-ranking`` (see ``--help``) and writes
benchmarks/results/policy_ranking.{md,json,png}.

    python benchmarks/policy_ranking.py --project-path workspace/fidelity-bench   # the committed table
    python benchmarks/policy_ranking.py --simulators random,popularity,collaborative,mnl  # log-only, ~1 min

The trained simulator comes from ``usermirrorer train --profile cpu --project-path W``.
"""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    from usermirrorer.cli import main as cli_main

    return cli_main(["bench", "policy-ranking", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
