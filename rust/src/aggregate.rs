//! Windowed aggregation keyed by (target, version): a ring of 1 s event-time buckets per
//! key, sliding windows of any length up to the ring, late events, bounded keys.
//! (stub: interface only, being implemented)

use crate::flags::{Flags, NUM_FLAGS};
use crate::malformed::Reason;

/// Bucket width. Fixed: the statistical tests work on 1 s buckets.
pub const BUCKET_MS: i64 = 1000;
/// At most this many latency thresholds with exceedance counters per key.
pub const MAX_THRESHOLDS: usize = 8;

/// Aggregator settings. `validate` names the offending field.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Ring length in seconds = the longest window that can be asked (plus lateness).
    pub ring_secs: u32,
    /// Events up to this much older than the watermark still land in their bucket.
    pub allowed_lateness_ms: i64,
    /// Events further than this ahead of the watermark are refused (clock skew / garbage)
    /// unless the aggregator holds no data yet.
    pub max_future_ms: i64,
    /// Maximum number of (target, version) keys.
    pub max_keys: usize,
    /// A key with no event for this long (event time) is evicted.
    pub idle_evict_ms: i64,
    /// Latency thresholds (ms) whose exceedance is counted per bucket, for every key
    /// unless a target sets its own.
    pub thresholds_ms: Vec<f64>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            ring_secs: 600,
            allowed_lateness_ms: 10_000,
            max_future_ms: 3_600_000,
            max_keys: 10_000,
            idle_evict_ms: 900_000,
            thresholds_ms: Vec::new(),
        }
    }
}

/// One request as the aggregator sees it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Event {
    pub ts_ms: i64,
    pub status: u16,
    pub success: bool,
    pub latency_ms: Option<f64>,
    pub flags: Flags,
}

/// Dense id of a (target, version) key.
pub type KeyId = u32;

/// What to snapshot.
#[derive(Debug, Clone, PartialEq)]
pub struct WindowQuery {
    /// Window length; `None` = everything since the key was created (cumulative).
    pub window_ms: Option<i64>,
    /// Exclusive end of the window; `None` = end of the newest bucket (watermark).
    pub end_ms: Option<i64>,
    /// Only this target.
    pub target: Option<String>,
    /// Include the per-bucket series.
    pub series: bool,
}

/// Per-bucket figures in a snapshot series.
#[derive(Debug, Clone, PartialEq)]
pub struct BucketPoint {
    pub start_ms: i64,
    pub requests: u64,
    pub successes: u64,
    pub failures: u64,
    pub latency_count: u64,
    /// Exceedance counts, one per threshold of the key.
    pub exceed: Vec<u64>,
}

/// Window figures for one key.
#[derive(Debug, Clone, PartialEq)]
pub struct KeySnapshot {
    pub target: String,
    pub version: String,
    pub start_ms: i64,
    pub end_ms: i64,
    pub requests: u64,
    pub successes: u64,
    pub failures: u64,
    pub status_2xx: u64,
    pub status_3xx: u64,
    pub status_4xx: u64,
    pub status_5xx: u64,
    /// Requests with no response (status 0).
    pub status_0: u64,
    pub rps: f64,
    /// Percent, `None` without requests.
    pub success_rate: Option<f64>,
    /// Requests that carried a latency.
    pub latency_count: u64,
    pub p50_ms: Option<f64>,
    pub p90_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub p999_ms: Option<f64>,
    pub min_ms: Option<f64>,
    pub max_ms: Option<f64>,
    pub mean_ms: Option<f64>,
    /// Count per response flag, indexed like [`crate::flags::FLAG_NAMES`].
    pub flags: [u64; NUM_FLAGS],
    /// (threshold ms, requests above it) for each threshold of the key.
    pub exceed: Vec<(f64, u64)>,
    pub series: Vec<BucketPoint>,
}

/// The aggregator. (stub)
pub struct Aggregator {
    _cfg: Config,
}

impl Aggregator {
    pub fn new(cfg: Config) -> Result<Self, String> {
        Ok(Aggregator { _cfg: cfg })
    }
    /// Id of the key, creating it (and evicting idle keys when full).
    pub fn key(&mut self, _target: &str, _version: &str) -> Result<KeyId, Reason> {
        Err(Reason::KeyLimit)
    }
    /// Fold one event into its bucket.
    pub fn observe(&mut self, _key: KeyId, _ev: &Event) -> Result<(), Reason> {
        Ok(())
    }
    /// Newest event time seen.
    pub fn watermark_ms(&self) -> Option<i64> {
        None
    }
    pub fn snapshot(&self, _q: &WindowQuery) -> Vec<KeySnapshot> {
        Vec::new()
    }
}
