"""Helpers shared by the tests (no tests here): tiny models, synthetic traces, trace edits,
pane and app harnesses, the family matrix and its independent recomputations, repository paths."""
