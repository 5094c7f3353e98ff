"""Files: atomic writes, the names of everything a run or sweep directory holds, the run lock, figures."""
