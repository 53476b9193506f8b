"""``python -m scorematch``: the command-line interface."""

from scorematch.cli import run

if __name__ == "__main__":
    run()
