"""Rich renderables for the TUI: half-block heatmap, sparkline/histogram, probability bar."""

from stepscope.tui.render.heatmap import HeatmapRenderable
from stepscope.tui.render.palette import MASKED, PALETTE, WINDOW
from stepscope.tui.render.probbar import ProbBar
from stepscope.tui.render.spark import Histogram, Sparkline

__all__ = ["HeatmapRenderable", "Histogram", "MASKED", "PALETTE", "ProbBar", "Sparkline", "WINDOW"]
