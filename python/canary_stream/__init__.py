"""canary-stream: progressive delivery driven by streamed service-mesh telemetry.

The core (parsing and windowed aggregation) is a Rust extension; this package is its typed
Python API and command line.
"""

from canary_stream.core import (
    FLAG_NAMES,
    FORMATS,
    Aggregator,
    AggregatorConfig,
    Attribution,
    BucketPoint,
    Classification,
    CorePanic,
    FeedResult,
    FieldMapping,
    Source,
    Totals,
    VersionStats,
    Windowing,
    detect_format,
    generate,
    generate_with_truth,
    parse_lines,
)

__version__ = "0.1.0"

__all__ = [
    "FLAG_NAMES",
    "FORMATS",
    "Aggregator",
    "AggregatorConfig",
    "Attribution",
    "BucketPoint",
    "Classification",
    "CorePanic",
    "FeedResult",
    "FieldMapping",
    "Source",
    "Totals",
    "VersionStats",
    "Windowing",
    "__version__",
    "detect_format",
    "generate",
    "generate_with_truth",
    "parse_lines",
]
