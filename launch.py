"""`python launch.py ARGS` is `python -m optqual train ARGS` (optqual/train.py), kept so that every
command written so far, and `resume` of every run started with it, keep working.

    python launch.py optimizer=adamw seed=1
    python launch.py -m optimizer=sgd,adamw seed=0,1,2
"""

from optqual.train import main

if __name__ == "__main__":
    main()
