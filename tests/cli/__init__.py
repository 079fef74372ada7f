"""Tests of the command line: commands, serve, the README examples, make demo, the transformers range."""
