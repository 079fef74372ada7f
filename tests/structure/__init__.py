"""Tests of the code structure: which parts may import which."""
