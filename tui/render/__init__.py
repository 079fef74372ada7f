"""Rich renderables for the TUI: half-block heatmap, sparkline/histogram, probability bar."""

from tui.render.heatmap import HeatmapRenderable
from tui.render.palette import MASKED, PALETTE, WINDOW
from tui.render.probbar import ProbBar
from tui.render.spark import Histogram, Sparkline

__all__ = ["HeatmapRenderable", "Histogram", "MASKED", "PALETTE", "ProbBar", "Sparkline", "WINDOW"]
