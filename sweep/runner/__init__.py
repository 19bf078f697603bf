"""Running a plan on Ray Tune: the engine (run and resume), the trainable (worker.py), Tune's
callback into the run's record, Ray start-up and storage (cluster.py), clean stops (signals.py),
one writer per run (lock.py), experiment trackers, and the harness's own benchmarks."""
