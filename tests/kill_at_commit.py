"""`python tests/kill_at_commit.py K OVERRIDES...`: `python -m optqual train OVERRIDES` that SIGKILLs
itself just before its K-th commit of a file (the rename that ends every atomic write, the run's
record included), leaving the run as a kill at that moment would; K = -1 kills nothing and prints
the number of commits on exit. The fault injection of tests/test_record.py."""

import atexit
import os
import signal
import sys

kill_at = int(sys.argv[1])
sys.argv = ["optqual train", *sys.argv[2:]]
commits = 0


def counted(commit):
    def wrapped(*args, **kwargs):
        global commits
        if commits == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
        commits += 1
        return commit(*args, **kwargs)

    return wrapped


os.replace, os.rename = counted(os.replace), counted(os.rename)
atexit.register(lambda: print(f"commits: {commits}", file=sys.stderr))

from optqual.train import main  # noqa: E402  (after the patch, as every module then sees it)

main()
