"""Command line of the Web Connector bridge service (issue 4)."""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    print(
        "qbwc-bridge: not built yet; see the open issue for the Web Connector bridge service (issue 4)",
        file=sys.stderr,
    )
    return 2


if __name__ == "__main__":
    sys.exit(main())
