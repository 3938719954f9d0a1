"""Speed benchmarks: `python benchmarks/speed.py --quick`."""
