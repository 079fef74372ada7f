"""Tests of the reading side: the trace format, reading, hostile input, fuzzing, the logit lens, diff, export, attribution."""
