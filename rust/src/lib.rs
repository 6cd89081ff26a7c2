//! canary-stream core: parse service-mesh access logs and aggregate per-version
//! request counts, success rate and latency quantiles over sliding event-time windows.
//!
//! Pure Rust; the PyO3 binding layer lives in [`python`] behind the `python` feature.
//!
//! Data flow: bytes → [`pipeline`] (split lines, UTF-8, length limit, CRI unwrap)
//! → [`parse`] (one parser per format, fills a borrowed [`record::Record`])
//! → [`attribution`] (which target and version served it) → [`classify`] (success?)
//! → [`aggregate`] (ring of 1 s buckets per key, [`sketch`] per bucket).

pub mod aggregate;
pub mod als;
pub mod arrow_ingest;
pub mod attribution;
pub mod classify;
pub mod flags;
pub mod generator;
pub mod kafka;
pub mod malformed;
pub mod parse;
pub mod pipeline;
pub mod record;
pub mod sketch;

#[cfg(feature = "python")]
mod python;
