"""``python -m scorematch``: the command-line interface."""

from scorematch.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
