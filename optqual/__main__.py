"""`python -m optqual COMMAND`: tools that work on run and sweep directories."""

import argparse
import sys

from optqual.runs.diff import NotARunDir, NotComparable, format_diff, format_sweep_diff
from optqual.runs.resume import resume
from optqual.runs.summary import RANKED_BY, terminal_text, write_summary
from optqual.runs.sweep import NotASweepDir


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m optqual", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    diff = commands.add_parser("diff", help="config keys that differ between two runs, or vary across a sweep")
    diff.add_argument("run_or_sweep", help="a sweep directory, or the first of two run directories")
    diff.add_argument("run_b", nargs="?", help="the second run directory")
    summarize = commands.add_parser("summarize", help="write summary.csv, summary.md and curves.png of a sweep (or run)")
    summarize.add_argument("directory")
    summarize.add_argument("--metric", choices=sorted(RANKED_BY), default="test_acc",
                           help="rank groups by the test accuracy of the last weights (default) or of the best weights")
    resume_parser = commands.add_parser("resume", help="continue a stopped run, or every unfinished job of a sweep")
    resume_parser.add_argument("directory")
    args = parser.parse_args(argv)
    try:
        if args.command == "resume":
            return resume(args.directory)
        if args.command == "summarize":
            summary = write_summary(args.directory, args.metric)
            print(terminal_text(summary))
            print(f"wrote summary.csv, summary.md, curves.png in {args.directory}")
        elif args.run_b is None:
            print(format_sweep_diff(args.run_or_sweep))
        else:
            print(format_diff(args.run_or_sweep, args.run_b))
    except (NotARunDir, NotComparable, NotASweepDir) as err:
        parser.exit(2, f"optqual {args.command}: error: {err}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
