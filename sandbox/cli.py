"""Command line of the simulators (issues 4 and 5)."""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    print("sandbox: not built yet; see the open issue for the simulators (issues 4 and 5)", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
