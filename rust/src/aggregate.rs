//! Windowed aggregation keyed by (target, version): a ring of 1 s event-time buckets per
//! key, sliding windows of any length up to the ring, late events, bounded keys.
//!
//! # Buckets and the ring
//!
//! Each key owns `ring_secs` one-second buckets; the event with time `t` (ms) belongs to
//! bucket `e = floor(t / 1000)` (its *epoch*) stored in slot `e mod ring_secs`. A slot
//! carries its epoch, so a slot holding an older epoch simply reads as empty for a newer
//! second: nothing is swept when time advances (lazy clearing). When an event needs a slot
//! that still holds an older epoch, that old bucket is first folded into the key's
//! cumulative accumulator, then reset. Every bucket is therefore either in the ring or in
//! the accumulator, never both, and "everything since the key was created"
//! (`window_ms: None`) is accumulator + all ring slots: exact for inputs of any length.
//!
//! # Time rules
//!
//! The watermark is the newest event time accepted (global over keys). An event is
//! refused with [`Reason::DroppedLate`] when it is older than `watermark −
//! allowed_lateness_ms` or its bucket is no longer in the ring (epoch ≤ watermark epoch −
//! ring_secs), and with [`Reason::FutureTimestamp`] when it is more than `max_future_ms`
//! ahead of the watermark (unless no event was accepted yet: the first event sets the clock).
//!
//! # Windows
//!
//! A window is a whole number of buckets: `end` is rounded up to a bucket boundary
//! (default: the end of the watermark's bucket), the length is rounded up to whole seconds
//! (at least one), and the window covers the buckets with epochs in [end − len, end).
//! A window reaching further back than the ring holds is **clamped** to the oldest bucket
//! the ring still holds (watermark epoch − ring_secs + 1); the snapshot's `start_ms` shows
//! the effective start and `rps` divides by the effective length. With the default end a
//! window of up to `ring_secs` is never clamped. For `window_ms: None` (cumulative),
//! `end_ms` is ignored: the figures run from the key's first bucket to the watermark's.
//!
//! A snapshot sums the window's buckets (exact counters) and merges their sketches
//! (bin-wise add, exact), then reads quantiles off the merged sketch. It costs
//! O(buckets × bins) — at most `ring_secs` buckets of a few hundred bins each — whatever
//! the number of events, because events are folded into buckets as they arrive and are
//! never kept. Quantiles are within α = 1 % of the exact rank-floor(q(n−1)) value and
//! clamped into the exact [min, max] of the window.
//!
//! # Thresholds
//!
//! Every key counts, per bucket, the latencies strictly above each of its thresholds
//! (≤ [`MAX_THRESHOLDS`]); a key uses its target's thresholds if
//! [`Aggregator::set_thresholds`] set them, else `Config::thresholds_ms`. Changing a
//! target's thresholds **resets** the exceedance counters of its keys (ring and
//! cumulative): counts before the change were for other thresholds and cannot be
//! converted, so windows overlapping the change count exceedances since the change only.
//!
//! # Keys and memory
//!
//! Keys are interned to dense [`KeyId`]s. When `max_keys` is reached, keys idle for
//! `idle_evict_ms` (event time, relative to the watermark) are evicted and their ids
//! reused; an evicted key's data is gone. [`Aggregator::key_generation`] changes on every
//! eviction, so callers that cache ids can tell when to drop the cache; `observe` on an
//! id that is no longer live returns [`Reason::KeyLimit`].
//!
//! Latencies that are NaN or negative are treated as absent (the request still counts);
//! latencies above [`crate::sketch::MAX_VALUE_MS`] are clamped to it.

mod chunk;
mod codes;
pub(crate) use chunk::{row_info, ChunkRows, ChunkScratch, MAX_CHUNK_ROWS, SKIP_ROW};
use codes::{BucketCodes, TotalCodes};
pub use codes::{CODE_SLOTS, TOTAL_CODE_SLOTS};

use crate::flags::{Flags, NUM_FLAGS};
use crate::malformed::Reason;
use crate::sketch::{bin_of_ms, Counter, Sketch, MAX_VALUE_MS, ZERO_BIN};
use hashbrown::{DefaultHashBuilder, HashTable};
use std::collections::HashMap;
use std::hash::BuildHasher;

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

/// Largest accepted `max_keys` (key ids stay below 2³¹, leaving room for marker values).
pub const MAX_KEYS_LIMIT: usize = 1 << 31;

/// Smallest and largest accepted `ring_secs`.
pub const RING_SECS_RANGE: (u32, u32) = (10, 86_400);

impl Config {
    /// Check every field; the error names the offending field and its allowed range.
    pub fn validate(&self) -> Result<(), String> {
        let (lo, hi) = RING_SECS_RANGE;
        if !(lo..=hi).contains(&self.ring_secs) {
            return Err(format!(
                "ring_secs must be between {lo} and {hi} (got {})",
                self.ring_secs
            ));
        }
        let max_late = (self.ring_secs as i64 - 1) * BUCKET_MS;
        if !(0..=max_late).contains(&self.allowed_lateness_ms) {
            return Err(format!(
                "allowed_lateness_ms must be between 0 and (ring_secs - 1) * 1000 = {max_late} (got {})",
                self.allowed_lateness_ms
            ));
        }
        if self.max_future_ms < 0 {
            return Err(format!(
                "max_future_ms must be >= 0 (got {})",
                self.max_future_ms
            ));
        }
        if self.max_keys == 0 || self.max_keys > MAX_KEYS_LIMIT {
            return Err(format!(
                "max_keys must be between 1 and {MAX_KEYS_LIMIT} (got {})",
                self.max_keys
            ));
        }
        if self.idle_evict_ms <= 0 {
            return Err(format!(
                "idle_evict_ms must be > 0 (got {})",
                self.idle_evict_ms
            ));
        }
        validate_thresholds(&self.thresholds_ms).map_err(|e| format!("thresholds_ms: {e}"))
    }
}

fn validate_thresholds(t: &[f64]) -> Result<(), String> {
    if t.len() > MAX_THRESHOLDS {
        return Err(format!("at most {MAX_THRESHOLDS} (got {})", t.len()));
    }
    if let Some(bad) = t.iter().find(|v| !v.is_finite() || **v < 0.0) {
        return Err(format!("each must be a finite number >= 0 (got {bad})"));
    }
    Ok(())
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
    /// Exact requests per HTTP status code, sorted by code, zero counts left out (see
    /// `status_codes_overflow`).
    pub status_codes: Vec<(u16, u64)>,
    /// Requests whose code is not in `status_codes`: rare, it takes more than
    /// [`CODE_SLOTS`] distinct non-200 codes in one second of one key (or more than
    /// [`TOTAL_CODE_SLOTS`] in the window). 200 is exact even then.
    pub status_codes_overflow: u64,
}

/// Slot of status classes: 0 → status 0, 1..=4 → 2xx..5xx, [`NO_CLASS`] for the
/// statuses in no class (1..=199, ≥ 600), which count as requests only.
#[inline]
pub(crate) fn status_class(status: u16) -> usize {
    const BY_HUNDREDS: [u8; 7] = [NO_CLASS as u8, NO_CLASS as u8, 1, 2, 3, 4, NO_CLASS as u8];
    if status == 0 {
        0
    } else {
        BY_HUNDREDS
            .get((status / 100).min(6) as usize)
            .map_or(NO_CLASS, |c| *c as usize)
    }
}

/// Status-class slot counting nothing (saves a branch on the hot path).
pub(crate) const NO_CLASS: usize = 5;

/// A latency as aggregated: NaN / negative → absent, huge → clamped.
#[inline]
pub(crate) fn clean_latency(l: Option<f64>) -> Option<f64> {
    match l {
        Some(v) if v >= 0.0 => Some(if v > MAX_VALUE_MS { MAX_VALUE_MS } else { v }),
        _ => None,
    }
}

/// Epoch of a slot that never held data.
const NO_EPOCH: i64 = i64::MIN;
/// `KeyState::cur_slot` of a key without buckets yet (no ring has that many slots).
const NO_SLOT: usize = usize::MAX;

/// One second of one key. Counters are u32 and add with wrapping arithmetic: 4·10⁹
/// events in one second is out of reach (the ingest peaks around 10⁸/s).
#[derive(Debug, Clone)]
struct Bucket {
    epoch: i64,
    requests: u32,
    successes: u32,
    /// By [`status_class`]; the last slot is the no-class sink.
    status: [u32; 6],
    exceed: [u32; MAX_THRESHOLDS],
    lat_sum: f64,
    lat_min: f64,
    lat_max: f64,
    /// Allocated on the first flagged request of the bucket (most buckets see none).
    flags: Option<Box<[u32; NUM_FLAGS]>>,
    /// Counts of the statuses other than 200, allocated on the first such request.
    codes: Option<Box<BucketCodes>>,
    /// Latency sketch; its count is the bucket's latency count.
    sketch: Sketch<u32>,
}

impl Bucket {
    fn empty() -> Self {
        Bucket {
            epoch: NO_EPOCH,
            requests: 0,
            successes: 0,
            status: [0; 6],
            exceed: [0; MAX_THRESHOLDS],
            lat_sum: 0.0,
            lat_min: f64::INFINITY,
            lat_max: f64::NEG_INFINITY,
            flags: None,
            codes: None,
            sketch: Sketch::new(),
        }
    }

    /// Reuse the slot for `epoch`, keeping its allocations; the sketch store is sized to
    /// `sketch_range` (see [`Sketch::clear_to_range`]).
    fn reset(&mut self, epoch: i64, sketch_range: (i32, usize)) {
        self.epoch = epoch;
        self.requests = 0;
        self.successes = 0;
        self.status = [0; 6];
        self.exceed = [0; MAX_THRESHOLDS];
        self.lat_sum = 0.0;
        self.lat_min = f64::INFINITY;
        self.lat_max = f64::NEG_INFINITY;
        if let Some(f) = self.flags.as_mut() {
            **f = [0; NUM_FLAGS];
        }
        if let Some(c) = self.codes.as_mut() {
            c.clear();
        }
        self.sketch.clear_to_range(sketch_range);
    }

    /// Count `n` requests of `code` (never 200: derived from the 2xx count).
    #[inline(never)]
    fn count_code(&mut self, code: u16, n: u32) {
        self.codes.get_or_insert_with(Box::default).add(code, n);
    }

    /// `bin` is `sketch::bin_of` of the latency (ignored without latency).
    #[inline(always)]
    fn record(&mut self, ev: &Event, latency: Option<f64>, bin: i32, thresholds: &[f64]) {
        self.requests = self.requests.wrapping_add(1);
        self.successes = self.successes.wrapping_add(ev.success as u32);
        if let Some(c) = self.status.get_mut(status_class(ev.status)) {
            *c = c.wrapping_add(1);
        }
        if ev.status != 200 {
            self.count_code(ev.status, 1);
        }
        if let Some(l) = latency {
            self.sketch.insert_bin(bin, 1);
            self.lat_sum += l;
            // Plain comparisons: `l` is never NaN here (cheaper than NaN-aware min/max).
            if l < self.lat_min {
                self.lat_min = l;
            }
            if l > self.lat_max {
                self.lat_max = l;
            }
            for (c, t) in self.exceed.iter_mut().zip(thresholds) {
                *c = c.wrapping_add((l > *t) as u32);
            }
        }
        if !ev.flags.is_empty() {
            self.count_flags(ev.flags);
        }
    }

    /// Count one request with the response flags `flags` (a minority of requests: kept
    /// out of line so `record` stays small).
    #[inline(never)]
    fn count_flags(&mut self, flags: Flags) {
        let counts = self.flags.get_or_insert_with(|| Box::new([0; NUM_FLAGS]));
        let mut bits = flags.0;
        while bits != 0 {
            if let Some(c) = counts.get_mut(bits.trailing_zeros() as usize) {
                *c = c.wrapping_add(1);
            }
            bits &= bits - 1;
        }
    }

    fn memory_bytes(&self) -> usize {
        std::mem::size_of::<Self>() - std::mem::size_of::<Sketch<u32>>()
            + self.sketch.memory_bytes()
            + self
                .flags
                .as_ref()
                .map_or(0, |_| std::mem::size_of::<[u32; NUM_FLAGS]>())
            + self
                .codes
                .as_ref()
                .map_or(0, |_| std::mem::size_of::<BucketCodes>())
    }
}

/// Sums of buckets with 64-bit counters: the cumulative accumulator of a key and the
/// scratch total of a window.
#[derive(Debug, Clone)]
struct Totals {
    requests: u64,
    successes: u64,
    status: [u64; 5],
    exceed: [u64; MAX_THRESHOLDS],
    lat_sum: f64,
    lat_min: f64,
    lat_max: f64,
    flags: [u64; NUM_FLAGS],
    codes: TotalCodes,
    sketch: Sketch<u64>,
}

impl Totals {
    fn new() -> Self {
        Totals {
            requests: 0,
            successes: 0,
            status: [0; 5],
            exceed: [0; MAX_THRESHOLDS],
            lat_sum: 0.0,
            lat_min: f64::INFINITY,
            lat_max: f64::NEG_INFINITY,
            flags: [0; NUM_FLAGS],
            codes: TotalCodes::default(),
            sketch: Sketch::new(),
        }
    }

    fn add_bucket(&mut self, b: &Bucket) {
        if b.requests == 0 {
            return;
        }
        self.requests += b.requests as u64;
        self.successes += b.successes as u64;
        add_all(&mut self.status, &b.status);
        add_all(&mut self.exceed, &b.exceed);
        if let Some(f) = b.flags.as_ref() {
            add_all(&mut self.flags, &f[..]);
        }
        if let Some(c) = b.codes.as_ref() {
            self.codes.add_bucket(c);
        }
        self.lat_sum += b.lat_sum;
        self.lat_min = self.lat_min.min(b.lat_min);
        self.lat_max = self.lat_max.max(b.lat_max);
        self.sketch.merge(&b.sketch);
    }

    fn add_totals(&mut self, t: &Totals) {
        self.requests += t.requests;
        self.successes += t.successes;
        add_all(&mut self.status, &t.status);
        add_all(&mut self.exceed, &t.exceed);
        add_all(&mut self.flags, &t.flags);
        self.codes.add_totals(&t.codes);
        self.lat_sum += t.lat_sum;
        self.lat_min = self.lat_min.min(t.lat_min);
        self.lat_max = self.lat_max.max(t.lat_max);
        self.sketch.merge(&t.sketch);
    }
}

fn add_all<A: Counter, B: Counter>(dst: &mut [A], src: &[B]) {
    for (d, s) in dst.iter_mut().zip(src) {
        *d = d.plus(s.get());
    }
}

/// Everything held for one (target, version).
#[derive(Debug, Clone)]
struct KeyState {
    target: Box<str>,
    version: Box<str>,
    hash: u64,
    ring: Vec<Bucket>,
    /// Buckets folded out of the ring.
    cumulative: Totals,
    /// Epoch of the oldest event accepted for this key (`NO_EPOCH` before the first).
    first_epoch: i64,
    /// Newest event time of this key (creation watermark before the first event).
    last_event_ms: i64,
    thresholds: [f64; MAX_THRESHOLDS],
    n_thresholds: usize,
    /// Epoch, start time and slot of the newest bucket written: most events of a key hit
    /// it, and recognising it by one subtraction skips the epoch and slot arithmetic
    /// (`rem_euclid` is a hardware division). `cur_slot` is [`NO_SLOT`] before the first
    /// bucket, so that test fails without looking at `cur_epoch`.
    cur_epoch: i64,
    cur_start_ms: i64,
    cur_slot: usize,
}

impl KeyState {
    fn thresholds(&self) -> &[f64] {
        self.thresholds.get(..self.n_thresholds).unwrap_or(&[])
    }

    fn set_thresholds(&mut self, t: &[f64]) {
        self.n_thresholds = t.len().min(MAX_THRESHOLDS);
        self.thresholds = [0.0; MAX_THRESHOLDS];
        for (d, s) in self.thresholds.iter_mut().zip(t) {
            *d = *s;
        }
        for b in &mut self.ring {
            b.exceed = [0; MAX_THRESHOLDS];
        }
        self.cumulative.exceed = [0; MAX_THRESHOLDS];
    }

    /// The bucket an event at `ts` goes to, with the key's thresholds; `DroppedLate` when
    /// its second has left the ring. The caller has checked `ts` against the watermark.
    #[inline(always)]
    fn bucket_for(&mut self, ts: i64, ring_secs: u32) -> Result<(&mut Bucket, &[f64]), Reason> {
        let in_current = (ts.wrapping_sub(self.cur_start_ms) as u64) < BUCKET_MS as u64;
        let slot = if in_current && self.cur_slot < self.ring.len() {
            // Invariant: ring[cur_slot] holds cur_epoch.
            self.cur_slot
        } else {
            self.enter_bucket(ts, ring_secs)?
        };
        let n = self.n_thresholds.min(MAX_THRESHOLDS);
        match (self.ring.get_mut(slot), self.thresholds.get(..n)) {
            (Some(b), Some(t)) => Ok((b, t)),
            _ => Err(Reason::DroppedLate),
        }
    }

    /// [`KeyState::bucket_for`] off the current bucket: find the slot of `ts`'s second and
    /// open it; returns the slot.
    #[cold]
    #[inline(never)]
    fn enter_bucket(&mut self, ts: i64, ring_secs: u32) -> Result<usize, Reason> {
        let epoch = ts.div_euclid(BUCKET_MS);
        let slot = epoch.rem_euclid(ring_secs as i64) as usize;
        if self.open_bucket(epoch, slot) {
            Ok(slot)
        } else {
            Err(Reason::DroppedLate)
        }
    }

    /// Make `ring[slot]` the bucket of `epoch`: an older second held there is folded into
    /// the accumulator first. False when the slot already serves a newer second (this one
    /// left the ring) or does not exist.
    fn open_bucket(&mut self, epoch: i64, slot: usize) -> bool {
        // The newest bucket's sketch range, to size a recycled one (see `Bucket::reset`).
        let range = self
            .ring
            .get(self.cur_slot)
            .map_or((0, 0), |b| b.sketch.store_range());
        let Some(b) = self.ring.get_mut(slot) else {
            return false;
        };
        if b.epoch > epoch {
            return false;
        }
        if b.epoch != epoch {
            self.cumulative.add_bucket(b);
            b.reset(epoch, range);
        }
        if epoch > self.cur_epoch {
            self.cur_epoch = epoch;
            self.cur_start_ms = epoch.saturating_mul(BUCKET_MS);
            self.cur_slot = slot;
        }
        if epoch < self.first_epoch || self.first_epoch == NO_EPOCH {
            self.first_epoch = epoch;
        }
        true
    }

    fn memory_bytes(&self) -> usize {
        std::mem::size_of::<Self>() - std::mem::size_of::<Sketch<u64>>()
            + self.target.len()
            + self.version.len()
            + self.ring.iter().map(Bucket::memory_bytes).sum::<usize>()
            + self.cumulative.sketch.memory_bytes()
            + self.cumulative.codes.memory_bytes()
    }
}

/// The aggregator.
pub struct Aggregator {
    cfg: Config,
    /// Slot per id; `None` for an evicted id waiting in `free`.
    keys: Vec<Option<KeyState>>,
    free: Vec<KeyId>,
    /// Key ids by hash of (target, version).
    index: HashTable<KeyId>,
    hasher: DefaultHashBuilder,
    live: usize,
    watermark: Option<i64>,
    /// Accepted event times [min_ts, max_ts], derived from the watermark whenever it moves
    /// (one comparison pair per event instead of the rules' arithmetic).
    min_ts: i64,
    max_ts: i64,
    /// Thresholds set per target with `set_thresholds`.
    target_thresholds: HashMap<Box<str>, Vec<f64>>,
    generation: u64,
}

impl Aggregator {
    /// A new aggregator; the error names the offending `Config` field.
    pub fn new(cfg: Config) -> Result<Self, String> {
        cfg.validate()?;
        Ok(Aggregator {
            cfg,
            keys: Vec::new(),
            free: Vec::new(),
            index: HashTable::new(),
            hasher: DefaultHashBuilder::default(),
            live: 0,
            watermark: None,
            min_ts: i64::MIN,
            max_ts: i64::MAX,
            target_thresholds: HashMap::new(),
            generation: 0,
        })
    }

    /// The settings in force.
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    #[inline]
    fn hash_of(&self, target: &str, version: &str) -> u64 {
        self.hasher.hash_one((target, version))
    }

    /// Id of an existing key (no allocation, no creation).
    #[inline]
    pub fn lookup(&self, target: &str, version: &str) -> Option<KeyId> {
        let hash = self.hash_of(target, version);
        let keys = &self.keys;
        self.index
            .find(hash, |&id| match keys.get(id as usize) {
                Some(Some(k)) => &*k.target == target && &*k.version == version,
                _ => false,
            })
            .copied()
    }

    /// Id of the key, creating it (and evicting idle keys when full).
    pub fn key(&mut self, target: &str, version: &str) -> Result<KeyId, Reason> {
        if let Some(id) = self.lookup(target, version) {
            return Ok(id);
        }
        if self.live >= self.cfg.max_keys {
            if let Some(wm) = self.watermark {
                self.evict_idle(wm);
            }
            if self.live >= self.cfg.max_keys {
                return Err(Reason::KeyLimit);
            }
        }
        let hash = self.hash_of(target, version);
        let ring_len = self.cfg.ring_secs as usize;
        let mut state = KeyState {
            target: target.into(),
            version: version.into(),
            hash,
            ring: vec![Bucket::empty(); ring_len],
            cumulative: Totals::new(),
            first_epoch: NO_EPOCH,
            last_event_ms: self.watermark.unwrap_or(i64::MIN),
            thresholds: [0.0; MAX_THRESHOLDS],
            n_thresholds: 0,
            cur_epoch: NO_EPOCH,
            cur_start_ms: i64::MIN,
            cur_slot: NO_SLOT,
        };
        let t = self
            .target_thresholds
            .get(target)
            .unwrap_or(&self.cfg.thresholds_ms);
        state.set_thresholds(t);
        let id = match self.free.pop() {
            Some(id) => {
                if let Some(slot) = self.keys.get_mut(id as usize) {
                    *slot = Some(state);
                }
                id
            }
            None => {
                self.keys.push(Some(state));
                (self.keys.len() - 1) as KeyId
            }
        };
        let keys = &self.keys;
        self.index
            .insert_unique(hash, id, |&i| match keys.get(i as usize) {
                Some(Some(k)) => k.hash,
                _ => 0,
            });
        self.live += 1;
        Ok(id)
    }

    /// Fold one event into its bucket.
    #[inline(always)]
    pub fn observe(&mut self, key: KeyId, ev: &Event) -> Result<(), Reason> {
        let latency = clean_latency(ev.latency_ms);
        let bin = latency.map_or(ZERO_BIN, bin_of_ms);
        self.observe_binned(key, ev, latency, bin)
    }

    /// [`Aggregator::observe`] with the latency already cleaned and its sketch bin already
    /// computed, so a columnar caller can compute bins in a separate vectorisable loop.
    /// `latency` must be `clean_latency(ev.latency_ms)` and `bin` its `bin_of`.
    #[inline(always)]
    pub(crate) fn observe_binned(
        &mut self,
        key: KeyId,
        ev: &Event,
        latency: Option<f64>,
        bin: i32,
    ) -> Result<(), Reason> {
        let ts = ev.ts_ms;
        if ts < self.min_ts {
            return Err(Reason::DroppedLate);
        }
        if ts > self.max_ts {
            return Err(Reason::FutureTimestamp);
        }
        let ring_secs = self.cfg.ring_secs;
        let Some(Some(k)) = self.keys.get_mut(key as usize) else {
            return Err(Reason::KeyLimit);
        };
        let (b, thresholds) = k.bucket_for(ts, ring_secs)?;
        b.record(ev, latency, bin, thresholds);
        k.last_event_ms = k.last_event_ms.max(ts);
        match self.watermark {
            Some(wm) if wm >= ts => {}
            _ => self.advance_watermark(ts),
        }
        Ok(())
    }

    /// Move the watermark to `ts` and recompute the accepted range: not older than the
    /// allowed lateness nor than the oldest bucket of the ring, not too far ahead.
    ///
    /// The ring bound never binds: with `R = ring_secs`, `validate` keeps
    /// `allowed_lateness_ms ≤ (R − 1) · 1000`, and the oldest bucket starts at
    /// `(epoch(ts) − R + 1) · 1000 ≤ ts − (R − 1) · 1000 ≤ ts − allowed_lateness_ms`
    /// (saturation keeps the order), so the lateness bound alone is the maximum of both.
    /// That saves a division on nearly every event (timestamps mostly increase).
    #[inline(always)]
    fn advance_watermark(&mut self, ts: i64) {
        self.watermark = Some(ts);
        self.min_ts = ts.saturating_sub(self.cfg.allowed_lateness_ms);
        self.max_ts = ts.saturating_add(self.cfg.max_future_ms);
    }

    /// Newest event time seen.
    pub fn watermark_ms(&self) -> Option<i64> {
        self.watermark
    }

    /// Number of live keys.
    pub fn key_count(&self) -> usize {
        self.live
    }

    /// Live keys as (id, target, version), in id order.
    pub fn keys(&self) -> impl Iterator<Item = (KeyId, &str, &str)> + '_ {
        self.keys
            .iter()
            .enumerate()
            .filter_map(|(i, k)| k.as_ref().map(|k| (i as KeyId, &*k.target, &*k.version)))
    }

    /// (target, version) of a live key.
    pub fn key_name(&self, key: KeyId) -> Option<(&str, &str)> {
        match self.keys.get(key as usize) {
            Some(Some(k)) => Some((&*k.target, &*k.version)),
            _ => None,
        }
    }

    /// Changes whenever keys are evicted (ids may then be reused for other keys).
    pub fn key_generation(&self) -> u64 {
        self.generation
    }

    /// Evict keys whose newest event is older than `now_ms − idle_evict_ms`; returns how
    /// many were evicted.
    pub fn evict_idle(&mut self, now_ms: i64) -> usize {
        let cutoff = now_ms.saturating_sub(self.cfg.idle_evict_ms);
        let mut evicted = 0;
        for id in 0..self.keys.len() {
            let Some(slot) = self.keys.get_mut(id) else {
                break;
            };
            let hash = match slot.as_ref() {
                Some(k) if k.last_event_ms < cutoff => k.hash,
                _ => continue,
            };
            *slot = None;
            if let Ok(entry) = self.index.find_entry(hash, |&i| i as usize == id) {
                entry.remove();
            }
            self.free.push(id as KeyId);
            self.live -= 1;
            evicted += 1;
        }
        if evicted > 0 {
            self.generation += 1;
        }
        evicted
    }

    /// Set the latency thresholds of every key of `target`, present and future. Resets the
    /// exceedance counters of its existing keys (see module docs).
    pub fn set_thresholds(&mut self, target: &str, thresholds_ms: Vec<f64>) -> Result<(), String> {
        validate_thresholds(&thresholds_ms).map_err(|e| format!("thresholds_ms: {e}"))?;
        for k in self.keys.iter_mut().flatten() {
            if &*k.target == target {
                k.set_thresholds(&thresholds_ms);
            }
        }
        self.target_thresholds.insert(target.into(), thresholds_ms);
        Ok(())
    }

    /// Thresholds in force for a live key.
    pub fn thresholds(&self, key: KeyId) -> Option<&[f64]> {
        match self.keys.get(key as usize) {
            Some(Some(k)) => Some(k.thresholds()),
            _ => None,
        }
    }

    /// Bytes held by one key (ring, sketches, accumulator, names).
    pub fn key_memory_bytes(&self, key: KeyId) -> Option<usize> {
        match self.keys.get(key as usize) {
            Some(Some(k)) => Some(k.memory_bytes()),
            _ => None,
        }
    }

    /// Bytes held by the whole aggregator (approximate for the hash tables).
    pub fn memory_bytes(&self) -> usize {
        let key_slots = self.keys.capacity() * std::mem::size_of::<Option<KeyState>>();
        // Each key's own figure includes its inline size, already counted in `key_slots`.
        let key_heap: usize = self
            .keys
            .iter()
            .flatten()
            .map(|k| k.memory_bytes() - std::mem::size_of::<KeyState>())
            .sum();
        let thresholds: usize = self
            .target_thresholds
            .iter()
            .map(|(t, v)| t.len() + v.capacity() * 8 + 48)
            .sum();
        std::mem::size_of::<Self>()
            + key_slots
            + key_heap
            + self.free.capacity() * std::mem::size_of::<KeyId>()
            + self.index.capacity() * (std::mem::size_of::<KeyId>() + 1)
            + thresholds
    }

    /// Window figures per key (sorted by target, then version); see module docs for how
    /// the window is formed and clamped.
    pub fn snapshot(&self, q: &WindowQuery) -> Vec<KeySnapshot> {
        let ring = self.cfg.ring_secs as i64;
        let wm_epoch = self.watermark.map(|w| w.div_euclid(BUCKET_MS));
        let mut out: Vec<KeySnapshot> = self
            .keys
            .iter()
            .flatten()
            .filter(|k| q.target.as_deref().is_none_or(|t| t == &*k.target))
            .map(|k| key_snapshot(k, q, ring, wm_epoch))
            .collect();
        out.sort_by(|a, b| (&a.target, &a.version).cmp(&(&b.target, &b.version)));
        out
    }
}

/// Bucket epoch rounding up a time in ms (`end` of a window).
fn ceil_epoch(ms: i64) -> i64 {
    ms.saturating_add(BUCKET_MS - 1).div_euclid(BUCKET_MS)
}

fn key_snapshot(k: &KeyState, q: &WindowQuery, ring: i64, wm_epoch: Option<i64>) -> KeySnapshot {
    let mut totals = Totals::new();
    // Epochs [start, end) the figures cover, and the epochs [scan_lo, scan_hi) to read
    // from the ring.
    let (start, end, scan_lo, scan_hi) = match (q.window_ms, wm_epoch) {
        (_, None) => {
            let e = q.end_ms.map_or(0, ceil_epoch);
            (e, e, e, e)
        }
        (Some(w), Some(wm)) => {
            let end = q.end_ms.map_or(wm + 1, ceil_epoch);
            let secs = ceil_epoch(w).clamp(1, ring);
            let oldest = wm - ring + 1;
            let start = end.saturating_sub(secs).max(oldest).min(end);
            (start, end, start, end.min(wm + 1))
        }
        (None, Some(wm)) => {
            totals.add_totals(&k.cumulative);
            for b in &k.ring {
                totals.add_bucket(b);
            }
            let first = if k.first_epoch == NO_EPOCH {
                wm + 1
            } else {
                k.first_epoch
            };
            // The series shows what the ring still holds.
            (first, wm + 1, first.max(wm - ring + 1), wm + 1)
        }
    };
    let mut series = Vec::new();
    let mut e = scan_lo;
    while e < scan_hi {
        let b = k
            .ring
            .get(e.rem_euclid(ring) as usize)
            .filter(|b| b.epoch == e);
        if q.window_ms.is_some() {
            if let Some(b) = b {
                totals.add_bucket(b);
            }
        }
        if q.series {
            series.push(bucket_point(e, b, k.n_thresholds));
        }
        e += 1;
    }
    let secs = end.saturating_sub(start).max(0) as f64;
    let lat_n = totals.sketch.count();
    let has_lat = lat_n > 0;
    let (lo, hi) = (totals.lat_min, totals.lat_max);
    // Clamping into the exact [min, max] only moves an estimate towards the true value.
    let quantile = |p: f64| totals.sketch.quantile(p).map(|v| v.clamp(lo, hi));
    KeySnapshot {
        target: k.target.to_string(),
        version: k.version.to_string(),
        start_ms: start.saturating_mul(BUCKET_MS),
        end_ms: end.saturating_mul(BUCKET_MS),
        requests: totals.requests,
        successes: totals.successes,
        failures: totals.requests.saturating_sub(totals.successes),
        status_0: totals.status[0],
        status_2xx: totals.status[1],
        status_3xx: totals.status[2],
        status_4xx: totals.status[3],
        status_5xx: totals.status[4],
        rps: if secs > 0.0 {
            totals.requests as f64 / secs
        } else {
            0.0
        },
        success_rate: (totals.requests > 0)
            .then(|| 100.0 * totals.successes as f64 / totals.requests as f64),
        latency_count: lat_n,
        p50_ms: quantile(0.5),
        p90_ms: quantile(0.9),
        p99_ms: quantile(0.99),
        p999_ms: quantile(0.999),
        min_ms: has_lat.then_some(lo),
        max_ms: has_lat.then_some(hi),
        mean_ms: has_lat.then(|| totals.lat_sum / lat_n as f64),
        flags: totals.flags,
        exceed: k
            .thresholds()
            .iter()
            .zip(totals.exceed)
            .map(|(t, c)| (*t, c))
            .collect(),
        series,
        status_codes: totals.codes.with_200(totals.status[1]),
        status_codes_overflow: totals.codes.overflow(),
    }
}

fn bucket_point(epoch: i64, b: Option<&Bucket>, n_thresholds: usize) -> BucketPoint {
    let n = n_thresholds.min(MAX_THRESHOLDS);
    match b {
        Some(b) => BucketPoint {
            start_ms: epoch.saturating_mul(BUCKET_MS),
            requests: b.requests as u64,
            successes: b.successes as u64,
            failures: b.requests.saturating_sub(b.successes) as u64,
            latency_count: b.sketch.count(),
            exceed: b.exceed.iter().take(n).map(|c| *c as u64).collect(),
        },
        None => BucketPoint {
            start_ms: epoch.saturating_mul(BUCKET_MS),
            requests: 0,
            successes: 0,
            failures: 0,
            latency_count: 0,
            exceed: vec![0; n],
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sketch::tests::{timed, Rng};
    use crate::sketch::{MIN_VALUE_MS, RELATIVE_ACCURACY};
    use proptest::prelude::*;

    fn ev(ts_ms: i64, status: u16, latency: Option<f64>) -> Event {
        Event {
            ts_ms,
            status,
            success: !(500..=599).contains(&status) && status != 0,
            latency_ms: latency,
            flags: Flags::NONE,
        }
    }

    fn cfg(ring: u32) -> Config {
        Config {
            ring_secs: ring,
            allowed_lateness_ms: 3_000,
            max_future_ms: 5_000,
            ..Config::default()
        }
    }

    fn window(w: Option<i64>, end: Option<i64>) -> WindowQuery {
        WindowQuery {
            window_ms: w,
            end_ms: end,
            target: None,
            series: false,
        }
    }

    #[test]
    fn validate_names_field() {
        let bad = |f: fn(&mut Config)| {
            let mut c = Config::default();
            f(&mut c);
            c.validate().unwrap_err()
        };
        assert!(bad(|c| c.ring_secs = 5).starts_with("ring_secs must be between 10 and 86400"));
        assert!(bad(|c| c.ring_secs = 100_000).starts_with("ring_secs"));
        assert!(bad(|c| c.allowed_lateness_ms = -1).starts_with("allowed_lateness_ms"));
        assert!(bad(|c| c.allowed_lateness_ms = 600_000).starts_with("allowed_lateness_ms"));
        assert!(bad(|c| c.max_future_ms = -1).starts_with("max_future_ms"));
        assert!(bad(|c| c.max_keys = 0).starts_with("max_keys"));
        assert!(bad(|c| c.idle_evict_ms = 0).starts_with("idle_evict_ms"));
        assert!(bad(|c| c.thresholds_ms = vec![1.0; 9]).starts_with("thresholds_ms: at most 8"));
        assert!(bad(|c| c.thresholds_ms = vec![f64::NAN]).starts_with("thresholds_ms"));
        assert!(Config::default().validate().is_ok());
        assert!(Aggregator::new(Config {
            ring_secs: 1,
            ..Config::default()
        })
        .is_err());
    }

    #[test]
    fn counts_rates_and_latency() {
        let mut a = Aggregator::new(cfg(60)).unwrap();
        let k = a.key("reviews", "v2").unwrap();
        assert_eq!(a.key("reviews", "v2"), Ok(k));
        let base = 1_700_000_000_000;
        for (i, (st, lat)) in [(200, 10.0), (200, 20.0), (404, 30.0), (503, 40.0), (0, 0.0)]
            .iter()
            .enumerate()
        {
            a.observe(k, &ev(base + i as i64 * 100, *st, Some(*lat)))
                .unwrap();
        }
        a.observe(k, &ev(base + 900, 302, None)).unwrap();
        let mut f = ev(base + 950, 200, None);
        f.flags = Flags::parse(b"UF,URX");
        a.observe(k, &f).unwrap();
        let s = &a.snapshot(&window(Some(10_000), None))[0];
        assert_eq!((s.target.as_str(), s.version.as_str()), ("reviews", "v2"));
        assert_eq!(s.end_ms, base + 1000);
        assert_eq!(s.start_ms, base - 9000);
        assert_eq!(s.requests, 7);
        assert_eq!((s.successes, s.failures), (5, 2));
        assert_eq!(
            (
                s.status_0,
                s.status_2xx,
                s.status_3xx,
                s.status_4xx,
                s.status_5xx
            ),
            (1, 3, 1, 1, 1)
        );
        assert!((s.rps - 0.7).abs() < 1e-12);
        assert!((s.success_rate.unwrap() - 500.0 / 7.0).abs() < 1e-9);
        assert_eq!(s.latency_count, 5);
        assert_eq!(
            (s.min_ms, s.max_ms, s.mean_ms),
            (Some(0.0), Some(40.0), Some(20.0))
        );
        let p50 = s.p50_ms.unwrap();
        assert!((p50 - 20.0).abs() / 20.0 <= RELATIVE_ACCURACY);
        assert_eq!(s.flags[1], 1); // UF
        assert_eq!(s.flags[4], 1); // URX
        assert_eq!(s.flags.iter().sum::<u64>(), 2);
        assert_eq!(
            s.status_codes,
            vec![(0, 1), (200, 3), (302, 1), (404, 1), (503, 1)]
        );
        assert_eq!(s.status_codes_overflow, 0);
        // Empty window elsewhere: no rates, no quantiles.
        let s = &a.snapshot(&window(Some(2_000), Some(base - 5_000)))[0];
        assert_eq!(s.requests, 0);
        assert_eq!(s.success_rate, None);
        assert_eq!(s.p99_ms, None);
        assert_eq!(s.mean_ms, None);
    }

    #[test]
    fn late_and_future_events() {
        let mut a = Aggregator::new(cfg(60)).unwrap();
        let k = a.key("t", "v").unwrap();
        // First event sets the clock, however far it is.
        a.observe(k, &ev(1_000_000, 200, None)).unwrap();
        assert_eq!(a.watermark_ms(), Some(1_000_000));
        assert_eq!(
            a.observe(k, &ev(1_005_001, 200, None)),
            Err(Reason::FutureTimestamp)
        );
        a.observe(k, &ev(1_005_000, 200, None)).unwrap();
        assert_eq!(a.watermark_ms(), Some(1_005_000));
        assert_eq!(
            a.observe(k, &ev(1_001_999, 200, None)),
            Err(Reason::DroppedLate)
        );
        a.observe(k, &ev(1_002_000, 200, None)).unwrap();
        assert_eq!(a.watermark_ms(), Some(1_005_000));
        assert_eq!(a.snapshot(&window(None, None))[0].requests, 3);
        assert_eq!(
            a.observe(99, &ev(1_005_000, 200, None)),
            Err(Reason::KeyLimit)
        );
        // Extreme timestamps do not panic.
        let mut b = Aggregator::new(cfg(10)).unwrap();
        let k = b.key("t", "v").unwrap();
        b.observe(k, &ev(i64::MAX, 200, Some(f64::INFINITY)))
            .unwrap();
        assert_eq!(
            b.observe(k, &ev(i64::MIN, 200, None)),
            Err(Reason::DroppedLate)
        );
        let s = &b.snapshot(&window(Some(i64::MAX), Some(i64::MIN)))[0];
        assert_eq!(s.requests, 0);
        let s = &b.snapshot(&window(None, None))[0];
        assert_eq!(s.requests, 1);
    }

    #[test]
    fn cumulative_survives_the_ring() {
        let mut a = Aggregator::new(cfg(10)).unwrap();
        let k = a.key("t", "v").unwrap();
        for s in 0..1000i64 {
            let status = if s % 10 == 0 { 500 } else { 200 };
            a.observe(k, &ev(s * 1000 + 500, status, Some(s as f64)))
                .unwrap();
        }
        let s = &a.snapshot(&window(None, None))[0];
        assert_eq!(s.requests, 1000);
        assert_eq!(s.failures, 100);
        assert_eq!(s.start_ms, 0);
        assert_eq!(s.end_ms, 1_000_000);
        assert_eq!((s.min_ms, s.max_ms), (Some(0.0), Some(999.0)));
        assert!((s.p50_ms.unwrap() - 499.0).abs() / 499.0 <= RELATIVE_ACCURACY);
        // A window longer than the ring is clamped to the ring.
        let s = &a.snapshot(&window(Some(100_000), None))[0];
        assert_eq!(s.requests, 10);
        assert_eq!(s.start_ms, 990_000);
        assert!((s.rps - 1.0).abs() < 1e-12);
    }

    #[test]
    fn series_lists_every_bucket_of_the_window() {
        let mut a = Aggregator::new(cfg(10)).unwrap();
        let k = a.key("t", "v").unwrap();
        a.set_thresholds("t", vec![15.0]).unwrap();
        a.observe(k, &ev(10_100, 200, Some(10.0))).unwrap();
        a.observe(k, &ev(12_100, 503, Some(20.0))).unwrap();
        let mut q = window(Some(4_000), None);
        q.series = true;
        let s = &a.snapshot(&q)[0];
        let starts: Vec<i64> = s.series.iter().map(|p| p.start_ms).collect();
        assert_eq!(starts, vec![9_000, 10_000, 11_000, 12_000]);
        assert_eq!(s.series[1].requests, 1);
        assert_eq!(s.series[2].requests, 0);
        assert_eq!(s.series[3].failures, 1);
        assert_eq!(s.series[3].exceed, vec![1]);
        assert_eq!(s.exceed, vec![(15.0, 1)]);
    }

    #[test]
    fn thresholds_per_target_and_reset() {
        let mut a = Aggregator::new(Config {
            thresholds_ms: vec![100.0],
            ..cfg(60)
        })
        .unwrap();
        let k1 = a.key("a", "v1").unwrap();
        let k2 = a.key("b", "v1").unwrap();
        for l in [50.0, 100.0, 150.0, 300.0] {
            a.observe(k1, &ev(1000, 200, Some(l))).unwrap();
            a.observe(k2, &ev(1000, 200, Some(l))).unwrap();
        }
        let snap = a.snapshot(&window(None, None));
        assert_eq!(snap[0].exceed, vec![(100.0, 2)]); // strictly above
        a.set_thresholds("a", vec![10.0, 200.0]).unwrap();
        assert!(a.set_thresholds("a", vec![1.0; 9]).is_err());
        a.observe(k1, &ev(1500, 200, Some(250.0))).unwrap();
        let snap = a.snapshot(&window(None, None));
        // Reset: only the event after the change counts.
        assert_eq!(snap[0].exceed, vec![(10.0, 1), (200.0, 1)]);
        assert_eq!(snap[1].exceed, vec![(100.0, 2)]);
        // New keys of the target take its thresholds.
        let k3 = a.key("a", "v2").unwrap();
        assert_eq!(a.thresholds(k3), Some(&[10.0, 200.0][..]));
    }

    #[test]
    fn key_limit_and_idle_eviction() {
        let mut a = Aggregator::new(Config {
            max_keys: 2,
            idle_evict_ms: 60_000,
            ..cfg(60)
        })
        .unwrap();
        let k1 = a.key("t", "v1").unwrap();
        let k2 = a.key("t", "v2").unwrap();
        a.observe(k1, &ev(0, 200, None)).unwrap();
        a.observe(k2, &ev(0, 200, None)).unwrap();
        assert_eq!(a.key("t", "v3"), Err(Reason::KeyLimit));
        // Time moves on for v2 only; v1 becomes idle.
        for s in 1..=61 {
            a.observe(k2, &ev(s * 1000, 200, None)).unwrap();
        }
        let g = a.key_generation();
        let k3 = a.key("t", "v3").unwrap();
        assert_eq!(k3, k1); // the id is reused
        assert_ne!(a.key_generation(), g);
        assert_eq!(a.key_count(), 2);
        assert_eq!(a.lookup("t", "v1"), None);
        assert_eq!(a.key_name(k3), Some(("t", "v3")));
        let names: Vec<_> = a.keys().map(|(_, t, v)| format!("{t}/{v}")).collect();
        assert_eq!(names, vec!["t/v3", "t/v2"]);
        assert_eq!(a.evict_idle(1_000_000), 2);
        assert_eq!(a.key_count(), 0);
        assert!(a.snapshot(&window(None, None)).is_empty());
    }

    /// Exact per-code counts of `evs` (the reference for `status_codes`).
    fn exact_codes<'a>(evs: impl IntoIterator<Item = &'a Event>) -> Vec<(u16, u64)> {
        let mut m = std::collections::BTreeMap::new();
        for e in evs {
            *m.entry(e.status).or_insert(0u64) += 1;
        }
        m.into_iter().collect()
    }

    #[test]
    fn status_codes_exact_in_windows_and_cumulative() {
        let mut a = Aggregator::new(cfg(10)).unwrap();
        let k = a.key("t", "v").unwrap();
        let pool = [
            200, 200, 200, 200, 201, 204, 0, 150, 301, 404, 429, 500, 502, 503, 504, 600, 999,
        ];
        let mut r = Rng::new(5);
        let mut all = Vec::new();
        // 30 s: the ring of 10 is recycled (buckets folded into the accumulator, reset and
        // reused), and every slot has seen non-200 codes before its reuse.
        for s in 0..30i64 {
            for i in 0..50 {
                let status = pool[(r.next_u64() % pool.len() as u64) as usize];
                let e = ev(s * 1000 + i * 20, status, Some(1.0));
                a.observe(k, &e).unwrap();
                all.push(e);
            }
        }
        let snap = &a.snapshot(&window(None, None))[0];
        assert_eq!(snap.status_codes, exact_codes(&all));
        assert_eq!(snap.status_codes_overflow, 0);
        let snap = &a.snapshot(&window(Some(5_000), None))[0];
        let recent = all.iter().filter(|e| e.ts_ms >= 25_000);
        assert_eq!(snap.status_codes, exact_codes(recent));
        // A window without requests lists no code, not even 200.
        let snap = &a.snapshot(&window(Some(1_000), Some(40_000)))[0];
        assert!(snap.status_codes.is_empty());
    }

    #[test]
    fn status_codes_overflow_keeps_200_exact() {
        let mut a = Aggregator::new(cfg(10)).unwrap();
        let k = a.key("t", "v").unwrap();
        let mut evs = Vec::new();
        // 20 distinct non-200 codes in one second: the first CODE_SLOTS get slots, the
        // others (including 2xx ones) overflow.
        let codes: Vec<u16> = (0..20).map(|i| [400, 201][i % 2] + i as u16).collect();
        for (i, &c) in codes.iter().enumerate() {
            for _ in 0..=i {
                evs.push(ev(1_000, c, None));
            }
            evs.push(ev(1_000, 200, None));
        }
        for e in &evs {
            a.observe(k, e).unwrap();
        }
        let s = &a.snapshot(&window(None, None))[0];
        let overflowed: u64 = (CODE_SLOTS..20).map(|i| i as u64 + 1).sum();
        assert_eq!(s.status_codes_overflow, overflowed);
        assert!(s.status_codes.contains(&(200, 20)));
        let exact = exact_codes(&evs);
        for (c, n) in &s.status_codes {
            assert!(exact.contains(&(*c, *n)), "{c}: {n}");
        }
        assert_eq!(s.status_codes.len(), CODE_SLOTS + 1);
        let listed: u64 = s.status_codes.iter().map(|e| e.1).sum();
        assert_eq!(listed + s.status_codes_overflow, s.requests);
        // The next second starts afresh: exact again for its window.
        a.observe(k, &ev(2_000, 419, None)).unwrap();
        let s = &a.snapshot(&window(Some(1_000), None))[0];
        assert_eq!(
            (s.status_codes.clone(), s.status_codes_overflow),
            (vec![(419, 1)], 0)
        );
    }

    #[test]
    fn memory_per_key_within_budget_for_60s_ring() {
        let mut a = Aggregator::new(Config {
            ring_secs: 60,
            thresholds_ms: vec![50.0, 100.0, 250.0],
            ..Config::default()
        })
        .unwrap();
        let k = a.key("reviews", "v2").unwrap();
        let mut r = Rng::new(7);
        // 2,000 req/s for 3 minutes: the ring is full and has been recycled.
        for s in 0..180i64 {
            for i in 0..2000 {
                let lat = if r.unit() < 0.03 {
                    0.0
                } else {
                    r.lognormal(20.0, 0.8)
                };
                // Some 503s and 404s in every second: every bucket holds per-code counts.
                let status = match i % 100 {
                    0 => 503,
                    1 => 404,
                    _ => 200,
                };
                let mut e = ev(s * 1000 + i / 2, status, Some(lat));
                if i % 500 == 0 {
                    e.flags = Flags::parse(b"UF");
                }
                a.observe(k, &e).unwrap();
            }
        }
        let bytes = a.key_memory_bytes(k).unwrap();
        println!("memory per key (60 s ring): {bytes} B");
        assert!(bytes <= 256 * 1024, "{bytes} B");
        assert!(a.memory_bytes() >= bytes);
    }

    /// One accepted event with its key, for brute-force recomputation.
    #[derive(Debug, Clone)]
    struct Accepted {
        key: usize,
        ev: Event,
    }

    fn brute_force_check(
        acc: &[Accepted],
        names: &[(&str, &str)],
        snap: &[KeySnapshot],
        cumulative: bool,
        thresholds: &[f64],
    ) -> Result<(), TestCaseError> {
        for s in snap {
            let ki = names
                .iter()
                .position(|n| n.0 == s.target && n.1 == s.version)
                .unwrap();
            let evs: Vec<&Event> = acc
                .iter()
                .filter(|a| a.key == ki)
                .map(|a| &a.ev)
                .filter(|e| cumulative || (e.ts_ms >= s.start_ms && e.ts_ms < s.end_ms))
                .collect();
            let n = evs.len() as u64;
            prop_assert_eq!(s.requests, n);
            prop_assert_eq!(s.successes, evs.iter().filter(|e| e.success).count() as u64);
            prop_assert_eq!(s.failures, n - s.successes);
            let class = |lo: u16, hi: u16| {
                evs.iter().filter(|e| (lo..=hi).contains(&e.status)).count() as u64
            };
            prop_assert_eq!(s.status_0, class(0, 0));
            prop_assert_eq!(s.status_2xx, class(200, 299));
            prop_assert_eq!(s.status_3xx, class(300, 399));
            prop_assert_eq!(s.status_4xx, class(400, 499));
            prop_assert_eq!(s.status_5xx, class(500, 599));
            // At most 6 distinct non-200 codes here: never overflows.
            prop_assert_eq!(&s.status_codes, &exact_codes(evs.iter().copied()));
            prop_assert_eq!(s.status_codes_overflow, 0);
            let secs = (s.end_ms - s.start_ms) as f64 / 1000.0;
            if secs > 0.0 {
                prop_assert!((s.rps - n as f64 / secs).abs() < 1e-9);
            }
            match s.success_rate {
                None => prop_assert_eq!(n, 0),
                Some(r) => prop_assert!((r - 100.0 * s.successes as f64 / n as f64).abs() < 1e-9),
            }
            for (fi, fc) in s.flags.iter().enumerate() {
                let want = evs.iter().filter(|e| e.flags.0 & (1 << fi) != 0).count() as u64;
                prop_assert_eq!(*fc, want);
            }
            let mut lats: Vec<f64> = evs.iter().filter_map(|e| e.latency_ms).collect();
            lats.sort_by(|a, b| a.partial_cmp(b).unwrap());
            prop_assert_eq!(s.latency_count, lats.len() as u64);
            for (j, t) in thresholds.iter().enumerate() {
                let want = lats.iter().filter(|l| **l > *t).count() as u64;
                prop_assert_eq!(s.exceed[j], (*t, want));
            }
            if lats.is_empty() {
                prop_assert!(s.p50_ms.is_none() && s.min_ms.is_none() && s.mean_ms.is_none());
                continue;
            }
            prop_assert_eq!(s.min_ms, Some(lats[0]));
            prop_assert_eq!(s.max_ms, lats.last().copied());
            let mean = lats.iter().sum::<f64>() / lats.len() as f64;
            prop_assert!((s.mean_ms.unwrap() - mean).abs() <= 1e-9 * mean.max(1.0));
            for (q, est) in [
                (0.5, s.p50_ms),
                (0.9, s.p90_ms),
                (0.99, s.p99_ms),
                (0.999, s.p999_ms),
            ] {
                let exact = lats[(q * (lats.len() - 1) as f64).floor() as usize];
                let est = est.unwrap();
                if exact < MIN_VALUE_MS {
                    prop_assert!((est - exact).abs() <= MIN_VALUE_MS);
                } else {
                    prop_assert!(
                        (est - exact).abs() / exact <= RELATIVE_ACCURACY * (1.0 + 1e-9),
                        "q={} exact={} est={}",
                        q,
                        exact,
                        est
                    );
                }
            }
        }
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]
        #[test]
        fn sliding_window_equals_recomputation(
            seed in any::<u64>(),
            n in 1usize..1500,
            windows in proptest::collection::vec((1i64..14_000, -8_000i64..3_000, any::<bool>()), 1..6),
        ) {
            let names = [("a", "v1"), ("a", "v2"), ("b", "v1")];
            let thresholds = vec![5.0, 40.0];
            let mut agg = Aggregator::new(Config {
                thresholds_ms: thresholds.clone(),
                ..cfg(10)
            }).unwrap();
            let ids: Vec<KeyId> = names.iter().map(|(t, v)| agg.key(t, v).unwrap()).collect();
            let mut r = Rng::new(seed);
            let mut accepted = Vec::new();
            let mut clock = 1_700_000_000_000i64;
            for _ in 0..n {
                clock += (r.next_u64() % 120) as i64;
                let u = r.unit();
                let ts = if u < 0.7 {
                    clock
                } else if u < 0.9 {
                    clock - (r.next_u64() % 4_000) as i64 // out of order, some too late
                } else if u < 0.97 {
                    clock - (r.next_u64() % 30_000) as i64 // mostly too late
                } else {
                    clock + (r.next_u64() % 9_000) as i64 // ahead, some too far
                };
                let status = [0u16, 200, 200, 200, 204, 302, 404, 503][(r.next_u64() % 8) as usize];
                let latency = match r.next_u64() % 10 {
                    0 => None,
                    1 => Some(0.0),
                    2 => Some((r.next_u64() % 100) as f64),
                    _ => Some(r.lognormal(20.0, 1.0)),
                };
                let flags = if r.unit() < 0.1 { Flags(1 << (r.next_u64() % 30)) } else { Flags::NONE };
                let e = Event { ts_ms: ts, status, success: status != 0 && status < 500, latency_ms: latency, flags };
                let key = (r.next_u64() % 3) as usize;
                if agg.observe(ids[key], &e).is_ok() {
                    accepted.push(Accepted { key, ev: e });
                }
            }
            let wm = agg.watermark_ms().unwrap();
            for (w, end_off, default_end) in windows {
                let end = if default_end { None } else { Some(wm + end_off) };
                let snap = agg.snapshot(&WindowQuery { window_ms: Some(w), end_ms: end, target: None, series: true });
                prop_assert_eq!(snap.len(), 3);
                for s in &snap {
                    // Window shape: whole buckets, clamped to the ring.
                    let end_epoch = match end {
                        None => wm.div_euclid(1000) + 1,
                        Some(e) => (e + 999).div_euclid(1000),
                    };
                    let secs = ((w + 999) / 1000).min(10);
                    let start_epoch = (end_epoch - secs).max(wm.div_euclid(1000) - 9).min(end_epoch);
                    prop_assert_eq!((s.start_ms, s.end_ms), (start_epoch * 1000, end_epoch * 1000));
                    let series_total: u64 = s.series.iter().map(|p| p.requests).sum();
                    prop_assert_eq!(series_total, s.requests);
                }
                brute_force_check(&accepted, &names, &snap, false, &thresholds)?;
            }
            let snap = agg.snapshot(&window(None, None));
            brute_force_check(&accepted, &names, &snap, true, &thresholds)?;
            let mut q = window(None, None);
            q.target = Some("a".into());
            prop_assert_eq!(agg.snapshot(&q).len(), 2);
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]
        /// Per-code counts equal exact counts whenever no (key, second) sees more than
        /// CODE_SLOTS distinct non-200 codes; otherwise 200 stays exact, listed counts
        /// never exceed the exact ones and every request is listed or overflowed.
        #[test]
        fn status_codes_equal_exact_counts(
            seed in any::<u64>(),
            n in 1usize..3000,
            distinct in 1usize..24,
            per_second in 5i64..400,
        ) {
            let mut agg = Aggregator::new(cfg(10)).unwrap();
            let ids = [agg.key("t", "a").unwrap(), agg.key("t", "b").unwrap()];
            let mut r = Rng::new(seed);
            let pool: Vec<u16> = (0..distinct).map(|_| (r.next_u64() % 1000) as u16).collect();
            let mut accepted: Vec<Vec<Event>> = vec![Vec::new(), Vec::new()];
            for i in 0..n as i64 {
                let status = if r.unit() < 0.5 { 200 } else { pool[(r.next_u64() % distinct as u64) as usize] };
                let ts = 1_000_000 + i * 1000 / per_second - (r.next_u64() % 1500) as i64;
                let key = (r.next_u64() & 1) as usize;
                let e = ev(ts, status, None);
                if agg.observe(ids[key], &e).is_ok() {
                    accepted[key].push(e);
                }
            }
            let wm = agg.watermark_ms().unwrap();
            for (q, lo) in [(window(None, None), i64::MIN), (window(Some(4_000), None), (wm.div_euclid(1000) - 3) * 1000)] {
                for (s, evs) in agg.snapshot(&q).iter().zip(&accepted) {
                    let evs: Vec<&Event> = evs.iter().filter(|e| e.ts_ms >= lo).collect();
                    let exact = exact_codes(evs.iter().copied());
                    let mut per_second: HashMap<i64, std::collections::HashSet<u16>> = HashMap::new();
                    for e in evs.iter().filter(|e| e.status != 200) {
                        per_second.entry(e.ts_ms.div_euclid(1000)).or_default().insert(e.status);
                    }
                    if per_second.values().all(|c| c.len() <= CODE_SLOTS) {
                        prop_assert_eq!(&s.status_codes, &exact);
                        prop_assert_eq!(s.status_codes_overflow, 0);
                    } else {
                        let n200 = |v: &[(u16, u64)]| v.iter().find(|e| e.0 == 200).map(|e| e.1);
                        prop_assert_eq!(n200(&s.status_codes), n200(&exact));
                        for (c, k) in &s.status_codes {
                            let want = exact.iter().find(|e| e.0 == *c).map_or(0, |e| e.1);
                            prop_assert!(*k > 0 && *k <= want);
                        }
                        let listed: u64 = s.status_codes.iter().map(|e| e.1).sum();
                        prop_assert_eq!(listed + s.status_codes_overflow, s.requests);
                    }
                }
            }
        }
    }

    #[test]
    #[ignore]
    fn speed_aggregate() {
        let mut a = Aggregator::new(Config {
            ring_secs: 60,
            thresholds_ms: vec![100.0],
            ..Config::default()
        })
        .unwrap();
        let keys = [
            a.key("reviews", "v1").unwrap(),
            a.key("reviews", "v2").unwrap(),
        ];
        let mut r = Rng::new(3);
        let n = 20_000_000usize;
        let events: Vec<(KeyId, Event)> = (0..n)
            .map(|i| {
                let status = if r.unit() < 0.01 { 503 } else { 200 };
                (
                    keys[(r.next_u64() & 1) as usize],
                    Event {
                        ts_ms: 1_700_000_000_000 + (i as i64) / 10, // 10 k events/s
                        status,
                        success: status < 500,
                        latency_ms: Some(r.lognormal(20.0, 0.8)),
                        flags: Flags::NONE,
                    },
                )
            })
            .collect();
        let ((), dt, cpu) = timed(|| {
            for (k, e) in &events {
                a.observe(*k, e).unwrap();
            }
        });
        let (snap, dq, _) = timed(|| a.snapshot(&window(Some(60_000), None)));
        println!(
            "speed_aggregate: {:.1} M events/CPU-s ({:.1} ns/event; wall {:.1} M/s); \
             snapshot of 2 keys x 60 s: {:.1} us; p99 {:?}",
            n as f64 / cpu / 1e6,
            cpu * 1e9 / n as f64,
            n as f64 / dt / 1e6,
            dq * 1e6,
            snap[0].p99_ms
        );
    }
}
