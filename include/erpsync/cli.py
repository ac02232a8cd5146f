"""Command line of the validate and prune commands (issue 6)."""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    print(
        "erpsync: not built yet; see the open issue for the validate and prune commands (issue 6)",
        file=sys.stderr,
    )
    return 2


if __name__ == "__main__":
    sys.exit(main())
