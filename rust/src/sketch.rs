//! Latency sketch with a relative-error guarantee (DDSketch-style log buckets, α = 1 %),
//! mergeable and subtractable. (stub: being implemented)
