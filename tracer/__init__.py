"""stepscope's tracer: records every intermediate tensor of a decoder's generation.

`from stepscope.tracer import load_trace` stays torch-free; the recording side (`tracer.session`,
`tracer.loading`) imports torch and transformers when used.
"""

from .reader import Step, Trace, load_trace
from .trace_format import TraceError, TraceWriteError

__version__ = "0.1.0"
__all__ = ["Step", "Trace", "TraceError", "TraceWriteError", "load_trace", "__version__"]
