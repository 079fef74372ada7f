"""`python -m stepscope`: the same command line as `stepscope`."""

from stepscope.tui.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
