"""`python -m optqual COMMAND` (or `optqual COMMAND`): train, and the tools that work on run and sweep directories."""

import argparse
import logging
import sys

from hydra.errors import HydraException
from omegaconf.errors import OmegaConfBaseException

from optqual.files.layout import config_dir
from optqual.errors import ConfigError
from optqual.runs.reader import RunDirError
from optqual.tools.diff import format_diff, format_sweep_diff
from optqual.tools.resume import resume
from optqual.tools.summary import RANKED_BY, terminal_text, write_summary


def analysis_settings() -> str:
    """What `analyze` and `compare` take, read from conf/ (the measures need torch to import)."""
    options = {group: sorted(path.stem for path in (config_dir() / group).glob("*.yaml")) for group in ("analysis", "effort")}
    keys = [line.split(":")[0] for line in (config_dir() / "analyze.yaml").read_text().splitlines()
            if line and not line.startswith((" ", "#", "-", "defaults"))]
    return (f"measures: analysis=[{','.join(options['analysis'])}] (the default: all), each with its keys "
            f"(analysis.sharpness.top_k=3; conf/analysis/); effort={'|'.join(options['effort'])} (quick: a first look in "
            f"about a minute per run); keys: {', '.join(keys)} (conf/analyze.yaml)")


def command_line() -> argparse.ArgumentParser:
    """The commands and their arguments (`train`'s own are Hydra's)."""
    parser = argparse.ArgumentParser(prog="python -m optqual", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    # Hydra reads the rest of a `train` command line itself (overrides, -m, --help, --cfg job, ...)
    commands.add_parser("train", add_help=False, help="train one run, or sweep with -m (python -m optqual train --help: its settings)")
    diff = commands.add_parser("diff", help="config keys that differ between two runs, or vary across a sweep")
    diff.add_argument("run_or_sweep", help="a sweep directory, or the first of two run directories")
    diff.add_argument("run_b", nargs="?", help="the second run directory")
    summarize = commands.add_parser("summarize", help="write summary.csv, summary.md and curves.png (curves.csv: its numbers) of a sweep (or run)")
    summarize.add_argument("directory")
    summarize.add_argument("--metric", choices=sorted(RANKED_BY), default="test_acc",
                           help="rank groups by the test accuracy of the last weights (default) or of the best weights")
    summarize.add_argument("--tune", type=lambda keys: keys.split(","), default=None, metavar="KEY[,KEY]",
                           help="select each group's value of these keys (e.g. optimizer.lr) by mean validation accuracy "
                                "over seeds, then compare the groups at it (default: the sweep's summary.tune)")
    resume_parser = commands.add_parser("resume", help="continue a stopped run, or every unfinished job of a sweep")
    resume_parser.add_argument("directory")
    profile = commands.add_parser("profile", help="parameters, MACs, checkpoint size, latency and throughput of a run's model")
    profile.add_argument("directory", help="a run directory")
    profile.add_argument("--device", default="auto", help="where to time it (default: cuda when present, else cpu)")
    profile.add_argument("--calls", type=int, default=200, help="timed batch-1 calls after the warm-up")
    profile.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    dashboard = commands.add_parser("dashboard", help="the Trackio dashboard of a run's or a sweep's project, unsmoothed")
    dashboard.add_argument("directory", help="a run directory, or a sweep directory")
    dashboard.add_argument("--port", type=int, default=None, help="serve on this port (default: the first free from 7860)")
    dashboard.add_argument("--no-browser", dest="browser", action="store_false", help="print the address only")
    analyze = commands.add_parser("analyze", help="how the solutions differ: measures per run, and a sweep's comparison",
                                  epilog=analysis_settings())
    analyze.add_argument("directory", help="a run directory, or a sweep directory")
    analyze.add_argument("overrides", nargs="*", help="of conf/analyze.yaml, e.g. analysis=[weights,sharpness] probe_size=512")
    analyze.add_argument("--force", action="store_true", help="recompute results that are up to date")
    analyze.add_argument("--snapshots", action="store_true",
                         help="measure each run at every snapshot it took (snapshots.at=...): trajectories per run and per group")
    compare = commands.add_parser("compare", help="the pairwise measures of two runs (interpolation, CKA, disagreement)",
                                  epilog=analysis_settings())
    compare.add_argument("run_a")
    compare.add_argument("run_b")
    compare.add_argument("overrides", nargs="*", help="of conf/analyze.yaml, e.g. analysis.interpolation.points=21")
    compare.add_argument("--force", action="store_true", help="recompute results that are up to date")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = command_line()
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["train"]:
        from optqual.train import main as train_main  # torch-heavy

        sys.argv = ["optqual train", *argv[1:]]  # as Hydra reads a script's command line
        train_main()
        return 0
    args, unknown = parser.parse_known_args(argv)  # overrides may follow an option: analyze DIR --force probe_size=512
    if unknown and (not hasattr(args, "overrides") or any(word.startswith("-") for word in unknown)):
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    if unknown:
        args.overrides += unknown
    try:
        if args.command in ("analyze", "compare"):
            from optqual.analysis.analyze import analyze as analyze_directory, compare as compare_runs  # torch-heavy

            logging.basicConfig(level=logging.INFO, format="%(message)s")
            if args.command == "analyze":
                return analyze_directory(args.directory, args.overrides, args.force, args.snapshots)
            return compare_runs(args.run_a, args.run_b, args.overrides, args.force)
        if args.command == "profile":
            from optqual.tools.profile import format_profile, profile_run  # torch-heavy

            print(format_profile(profile_run(args.directory, args.device, args.calls, args.threads)))
            print(f"wrote {args.directory}/profile.json")
        elif args.command == "dashboard":
            from optqual.tools.dashboard import show  # trackio: a web server

            show(args.directory, args.port, args.browser)
        elif args.command == "resume":
            return resume(args.directory)
        elif args.command == "summarize":
            summary = write_summary(args.directory, args.metric, args.tune)
            print(terminal_text(summary))
            written = "summary.csv, summary.md, curves.png, curves.csv" + (", sensitivity.png" if summary.tune else "")
            print(f"wrote {written} in {args.directory}")
        elif args.run_b is None:
            print(format_sweep_diff(args.run_or_sweep))
        else:
            print(format_diff(args.run_or_sweep, args.run_b))
    except (RunDirError, ConfigError) as err:
        parser.exit(2, f"optqual {args.command}: error: {err}\n")
    except (HydraException, OmegaConfBaseException) as err:  # an analysis override Hydra cannot compose
        parser.exit(2, f"optqual {args.command}: error: {str(err).splitlines()[0]}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
