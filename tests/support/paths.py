"""Paths the tests use, computed once: the repository root and the committed fixture traces."""

from __future__ import annotations

import os

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TESTS = os.path.join(ROOT, "tests")
FIXTURE = os.path.join(TESTS, "fixtures", "tiny_trace")
FIXTURE_V1 = os.path.join(TESTS, "fixtures", "tiny_trace_v1")
README = os.path.join(ROOT, "README.md")
