"""Tests of the terminal UI: the app, panes, views, rendering, snapshots, the palette, watches, breakpoints, the Why panes."""
