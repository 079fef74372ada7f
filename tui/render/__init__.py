"""Rich renderables for the TUI: half-block heatmap, sparkline/histogram, probability bar, and the
lines of the text panes (attribution, compare, what if, branch effects, the chosen token), built
from the data `tui.views` shapes."""

from stepscope.tui.render.heatmap import HeatmapRenderable
from stepscope.tui.render.palette import MASKED, PALETTE, WINDOW
from stepscope.tui.render.probbar import ProbBar
from stepscope.tui.render.spark import Histogram, Sparkline

__all__ = ["HeatmapRenderable", "Histogram", "MASKED", "PALETTE", "ProbBar", "Sparkline", "WINDOW"]
