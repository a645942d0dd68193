import os

# Tests run on CPU machines with two cores; keep torch from oversubscribing them.
os.environ.setdefault("OMP_NUM_THREADS", "1")
