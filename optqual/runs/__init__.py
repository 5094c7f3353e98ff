"""Run and sweep directories read back, and a sweep's jobs."""
