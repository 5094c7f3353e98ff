"""Progress of long work, readable wherever it is written: tqdm's bar on a terminal; elsewhere (a
log file, a SLURM job's output, a notebook's captured stderr) one plain line every `every`
seconds and a last one when the work ends, where tqdm alone would print nothing (disable=None) or
redraw one line with carriage returns."""

import io
import sys

from tqdm import tqdm

LINE_EVERY = 20.0  # seconds between progress lines when stderr is not a terminal


class Lines(io.TextIOBase):
    """tqdm's redraws as whole lines."""

    def __init__(self, stream):
        self.stream = stream
        self.last = ""

    def write(self, text: str) -> int:
        line = text.replace("\r", "").strip()
        if line and line != self.last:  # closing redraws the last state once more
            self.stream.write(line + "\n")
            self.stream.flush()
            self.last = line
        return len(text)

    def flush(self) -> None:
        self.stream.flush()


def progress(total: int, description: str, unit: str, every: float = LINE_EVERY) -> tqdm:
    """A tqdm bar of `total` `unit`s: drawn on a terminal, written as lines elsewhere (a change of
    description writes one at once; set postfixes with refresh=False to keep to `every`)."""
    if sys.stderr.isatty():
        return tqdm(total=total, desc=description, unit=unit)
    # set_description() ends the description with ": ", the constructor does not
    return tqdm(total=total, desc=f"{description}: ", unit=unit, file=Lines(sys.stderr), mininterval=every,
                bar_format="{desc}{n}/{total} {unit}s, {elapsed} elapsed, about {remaining} left{postfix}")
