"""The command line: one thin module per `fmnist-jax` command (flags and `main(argv) -> int`) over the library.

Nothing in the library imports from here (tests/test_layout.py checks it).
"""
