"""The `stepscope` command line: one module per command (view, run, trace, info, diff, serve), the
shared options in `common`, and `main` (the parser, the dispatch and the exit codes)."""
