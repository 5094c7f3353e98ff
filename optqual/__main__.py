"""`python -m optqual COMMAND`: tools that work on finished run directories."""

import argparse
import sys

from optqual.diff import NotARunDir, format_diff


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m optqual", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    diff = commands.add_parser("diff", help="config keys whose values differ between two runs")
    diff.add_argument("run_a")
    diff.add_argument("run_b")
    args = parser.parse_args(argv)
    try:
        print(format_diff(args.run_a, args.run_b))
    except NotARunDir as err:
        parser.exit(2, f"optqual diff: error: {err}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
