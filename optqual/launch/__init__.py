"""What Hydra calls around a run or sweep: directory claims, the checks of every job, job resources."""
