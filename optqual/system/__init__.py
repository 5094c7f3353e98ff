"""The machine: seeding and random streams, deterministic kernels, threads, allocator, devices, hardware, signals."""
