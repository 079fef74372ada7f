"""`python -m stepscope`: the same command line as `stepscope`."""

from stepscope.cli.main import main

if __name__ == "__main__":
    raise SystemExit(main())
