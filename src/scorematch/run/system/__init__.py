"""Where a run executes: device and threads, size limits, the --nproc launcher, DDP."""
