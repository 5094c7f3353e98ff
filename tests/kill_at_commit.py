"""`python tests/kill_at_commit.py K OVERRIDES...`: `python -m optqual train OVERRIDES` that SIGKILLs
itself just before its K-th commit of a file (the rename that ends every atomic write, the run's
record included), leaving the run as a kill at that moment would; K = -1 kills nothing and prints
the number of commits and the file of each on exit. The fault injection of tests/test_record.py."""

import atexit
import os
import signal
import sys

kill_at = int(sys.argv[1])
sys.argv = ["optqual train", *sys.argv[2:]]
commits: list[str] = []  # the file each commit made


def counted(commit):
    def wrapped(source, target, *args, **kwargs):
        if len(commits) == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
        commits.append(os.fspath(target))
        return commit(source, target, *args, **kwargs)

    return wrapped


os.replace, os.rename = counted(os.replace), counted(os.rename)
atexit.register(lambda: print("".join(f"commit: {target}\n" for target in commits) + f"commits: {len(commits)}", file=sys.stderr))

from optqual.train import main  # noqa: E402  (after the patch, as every module then sees it)

main()
