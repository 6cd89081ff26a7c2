//! Columnar ingest: fold Arrow record batches (pyarrow, Polars via the PyCapsule interface)
//! into the aggregator without allocating per row.
//!
//! Each column is downcast once per batch. Rows are then processed in chunks of
//! [`CHUNK`]: numeric columns are first converted into small typed scratch buffers with
//! one tight loop per column (one type dispatch per chunk, not per row), latency sketch
//! bins and the classifier's verdicts are computed in loops of their own, then one loop
//! resolves each row's key and calls the aggregator.
//!
//! Keys: when target and version are dictionary columns (Polars categoricals), a row's
//! key comes from a small direct-mapped cache indexed by the two dictionary codes, so the
//! strings are hashed once per distinct pair, not per row. Plain string columns (Utf8,
//! LargeUtf8, Utf8View) go through a most-recently-used list of (target, version) pairs
//! compared by bytes; only a miss hashes (via [`Aggregator::key`]). Caches are dropped
//! when the aggregator evicts keys ([`Aggregator::key_generation`]), and a key id is used
//! right after it is resolved (a later row's new key may evict an idle key and reuse its
//! id). The per-row semantics are exactly those of [`Aggregator::observe`], which a
//! property test checks against an Event-by-Event reference.
//!
//! Row rules: null status → [`Reason::MissingField`]; a status outside 0..=65535, or a
//! latency that is negative, NaN or infinite → [`Reason::BadNumber`]; null or empty
//! target/version → [`Reason::UnattributableVersion`]; null latency → the request counts
//! without a latency; null timestamp (or no timestamp column: empty name) → `now_ms`;
//! null in the optional success column → the classifier decides.

use crate::aggregate::{
    row_info, Aggregator, ChunkRows, ChunkScratch, Event, KeyId, MAX_CHUNK_ROWS, SKIP_ROW,
};
use crate::classify::Classifier;
use crate::flags::Flags;
use crate::malformed::{Reason, ReasonCounts};
#[cfg(target_arch = "x86_64")]
use crate::parse::istio_text::masks::Avx2;
use crate::parse::ndjson::Unit;
use crate::sketch::{bin_of_branchless, MAX_VALUE_MS, ZERO_BIN};
use arrow_array::cast::AsArray;
use arrow_array::types::{
    Int16Type, Int32Type, Int64Type, Int8Type, UInt16Type, UInt32Type, UInt64Type, UInt8Type,
};
use arrow_array::{
    Array, BooleanArray, LargeStringArray, RecordBatch, StringArray, StringViewArray,
};
use arrow_buffer::NullBuffer;
use arrow_schema::{DataType, TimeUnit};

/// Rows converted per step (scratch buffers of this many rows).
pub const CHUNK: usize = 1024;
const _: () = assert!(CHUNK <= MAX_CHUNK_ROWS);

/// Which columns hold what.
#[derive(Debug, Clone, PartialEq)]
pub struct ColumnMapping {
    pub target: String,
    pub version: String,
    pub status: String,
    pub latency: String,
    pub latency_unit: Unit,
    /// Event time column; empty name = none (every row gets `now_ms`).
    pub timestamp: String,
    /// Optional boolean column overriding the classifier.
    pub success: Option<String>,
}

impl Default for ColumnMapping {
    fn default() -> Self {
        ColumnMapping {
            target: "target".into(),
            version: "version".into(),
            status: "status".into(),
            latency: "latency_ms".into(),
            latency_unit: Unit::Ms,
            timestamp: "timestamp".into(),
            success: None,
        }
    }
}

/// Outcome of one batch.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct IngestStats {
    /// Rows in the batch.
    pub rows: u64,
    /// Rows folded into the aggregator.
    pub accepted: u64,
    /// Why the other rows were not.
    pub reasons: ReasonCounts,
}

/// A numeric column's values (offset already applied) and null mask.
enum Nums<'a> {
    I8(&'a [i8]),
    I16(&'a [i16]),
    I32(&'a [i32]),
    I64(&'a [i64]),
    U8(&'a [u8]),
    U16(&'a [u16]),
    U32(&'a [u32]),
    U64(&'a [u64]),
    F32(&'a [f32]),
    F64(&'a [f64]),
}

/// Run `$body` with `$v` bound to the typed slice of any variant.
macro_rules! with_nums {
    ($nums:expr, $v:ident => $body:expr) => {
        match $nums {
            Nums::I8($v) => $body,
            Nums::I16($v) => $body,
            Nums::I32($v) => $body,
            Nums::I64($v) => $body,
            Nums::U8($v) => $body,
            Nums::U16($v) => $body,
            Nums::U32($v) => $body,
            Nums::U64($v) => $body,
            Nums::F32($v) => $body,
            Nums::F64($v) => $body,
        }
    };
}

/// Conversions of the native types we accept, simple enough for the per-column loops to
/// vectorise.
trait Native: Copy {
    fn to_f64(self) -> f64;
    /// The value as u32 when it is an integer in 0..=limit, else `u32::MAX`.
    fn to_u32_upto(self, limit: u32) -> u32;
}

macro_rules! native_signed {
    ($($t:ty),*) => {$(
        impl Native for $t {
            #[inline]
            fn to_f64(self) -> f64 { self as f64 }
            #[inline]
            fn to_u32_upto(self, limit: u32) -> u32 {
                if self >= 0 && (self as i64) <= limit as i64 { self as u32 } else { u32::MAX }
            }
        }
    )*};
}
native_signed!(i8, i16, i32, i64);

macro_rules! native_unsigned {
    ($($t:ty),*) => {$(
        impl Native for $t {
            #[inline]
            fn to_f64(self) -> f64 { self as f64 }
            #[inline]
            fn to_u32_upto(self, limit: u32) -> u32 {
                if (self as u64) <= limit as u64 { self as u32 } else { u32::MAX }
            }
        }
    )*};
}
native_unsigned!(u8, u16, u32, u64);

macro_rules! native_float {
    ($($t:ty),*) => {$(
        impl Native for $t {
            #[inline]
            fn to_f64(self) -> f64 { self as f64 }
            /// Floats are refused where integers are required.
            #[inline]
            fn to_u32_upto(self, _limit: u32) -> u32 { u32::MAX }
        }
    )*};
}
native_float!(f32, f64);

struct NumCol<'a> {
    nums: Nums<'a>,
    nulls: Option<&'a NullBuffer>,
}

fn column<'a>(batch: &'a RecordBatch, name: &str) -> Result<&'a dyn Array, String> {
    batch
        .column_by_name(name)
        .map(|c| c.as_ref())
        .ok_or_else(|| format!("column '{name}' not found"))
}

fn nulls_of(a: &dyn Array) -> Option<&NullBuffer> {
    a.nulls()
}

fn num_col<'a>(
    a: &'a dyn Array,
    name: &str,
    what: &str,
    floats: bool,
) -> Result<NumCol<'a>, String> {
    let nums = match a.data_type() {
        DataType::Int8 => Nums::I8(a.as_primitive::<Int8Type>().values()),
        DataType::Int16 => Nums::I16(a.as_primitive::<Int16Type>().values()),
        DataType::Int32 => Nums::I32(a.as_primitive::<Int32Type>().values()),
        DataType::Int64 => Nums::I64(a.as_primitive::<Int64Type>().values()),
        DataType::UInt8 => Nums::U8(a.as_primitive::<UInt8Type>().values()),
        DataType::UInt16 => Nums::U16(a.as_primitive::<UInt16Type>().values()),
        DataType::UInt32 => Nums::U32(a.as_primitive::<UInt32Type>().values()),
        DataType::UInt64 => Nums::U64(a.as_primitive::<UInt64Type>().values()),
        DataType::Float32 if floats => {
            Nums::F32(a.as_primitive::<arrow_array::types::Float32Type>().values())
        }
        DataType::Float64 if floats => {
            Nums::F64(a.as_primitive::<arrow_array::types::Float64Type>().values())
        }
        other => return Err(format!("column '{name}': expected {what}, got {other}")),
    };
    Ok(NumCol {
        nums,
        nulls: nulls_of(a),
    })
}

/// Timestamp column as i64 values plus the conversion to ms.
struct TsCol<'a> {
    values: &'a [i64],
    nulls: Option<&'a NullBuffer>,
    unit: TimeUnit,
}

fn ts_col<'a>(a: &'a dyn Array, name: &str) -> Result<TsCol<'a>, String> {
    use arrow_array::types::{
        TimestampMicrosecondType, TimestampMillisecondType, TimestampNanosecondType,
        TimestampSecondType,
    };
    let (values, unit): (&[i64], TimeUnit) = match a.data_type() {
        DataType::Int64 => (
            a.as_primitive::<Int64Type>().values(),
            TimeUnit::Millisecond,
        ),
        DataType::Timestamp(TimeUnit::Second, _) => (
            a.as_primitive::<TimestampSecondType>().values(),
            TimeUnit::Second,
        ),
        DataType::Timestamp(TimeUnit::Millisecond, _) => (
            a.as_primitive::<TimestampMillisecondType>().values(),
            TimeUnit::Millisecond,
        ),
        DataType::Timestamp(TimeUnit::Microsecond, _) => (
            a.as_primitive::<TimestampMicrosecondType>().values(),
            TimeUnit::Microsecond,
        ),
        DataType::Timestamp(TimeUnit::Nanosecond, _) => (
            a.as_primitive::<TimestampNanosecondType>().values(),
            TimeUnit::Nanosecond,
        ),
        other => {
            return Err(format!(
                "column '{name}': expected Int64 (ms) or Timestamp, got {other}"
            ))
        }
    };
    Ok(TsCol {
        values,
        nulls: nulls_of(a),
        unit,
    })
}

/// A utf8-ish array.
#[derive(Clone, Copy)]
enum StrArr<'a> {
    Utf8(&'a StringArray),
    Large(&'a LargeStringArray),
    View(&'a StringViewArray),
}

impl<'a> StrArr<'a> {
    fn of(a: &'a dyn Array) -> Option<Self> {
        match a.data_type() {
            DataType::Utf8 => Some(StrArr::Utf8(a.as_string::<i32>())),
            DataType::LargeUtf8 => Some(StrArr::Large(a.as_string::<i64>())),
            DataType::Utf8View => Some(StrArr::View(a.as_string_view())),
            _ => None,
        }
    }

    /// Value at `i`; `None` when null or out of range.
    #[inline]
    fn get(self, i: usize) -> Option<&'a str> {
        match self {
            StrArr::Utf8(a) => (i < a.len() && a.is_valid(i)).then(|| a.value(i)),
            StrArr::Large(a) => (i < a.len() && a.is_valid(i)).then(|| a.value(i)),
            StrArr::View(a) => (i < a.len() && a.is_valid(i)).then(|| a.value(i)),
        }
    }

    /// The 16-byte views and null mask of a Utf8View array. Within one array, equal views
    /// mean equal strings (a view holds the length and either the whole string, when it
    /// is at most 12 bytes, or its buffer and offset), so views can stand for strings in
    /// a cache (not conversely: the cache then just misses).
    fn views(self) -> Option<(&'a [u128], Option<&'a NullBuffer>)> {
        match self {
            StrArr::View(a) => Some((a.views().as_ref(), a.nulls())),
            _ => None,
        }
    }
}

/// A target or version column.
enum StrCol<'a> {
    Plain(StrArr<'a>),
    /// Dictionary: per-row codes (converted per chunk) into `values`.
    Dict {
        codes: NumCol<'a>,
        values: StrArr<'a>,
    },
}

impl<'a> StrCol<'a> {
    fn of(a: &'a dyn Array, name: &str) -> Result<Self, String> {
        if let Some(s) = StrArr::of(a) {
            return Ok(StrCol::Plain(s));
        }
        let bad = || {
            format!(
                "column '{name}': expected Utf8, LargeUtf8, Utf8View or a dictionary of them, got {}",
                a.data_type()
            )
        };
        let DataType::Dictionary(key_type, _) = a.data_type() else {
            return Err(bad());
        };
        macro_rules! dict {
            ($k:ty) => {{
                let d = a.as_dictionary::<$k>();
                let values = StrArr::of(d.values().as_ref()).ok_or_else(bad)?;
                let keys = d.keys();
                let codes = num_col(keys, name, "integer dictionary keys", false)?;
                (codes, values)
            }};
        }
        let (codes, values) = match key_type.as_ref() {
            DataType::Int8 => dict!(Int8Type),
            DataType::Int16 => dict!(Int16Type),
            DataType::Int32 => dict!(Int32Type),
            DataType::Int64 => dict!(Int64Type),
            DataType::UInt8 => dict!(UInt8Type),
            DataType::UInt16 => dict!(UInt16Type),
            DataType::UInt32 => dict!(UInt32Type),
            DataType::UInt64 => dict!(UInt64Type),
            _ => return Err(bad()),
        };
        Ok(StrCol::Dict { codes, values })
    }

    /// String of row `row` (chunk code `code` for dictionaries).
    #[inline]
    fn get(&self, row: usize, code: u32) -> Option<&'a str> {
        match self {
            StrCol::Plain(a) => a.get(row),
            StrCol::Dict { values, .. } => values.get(code as usize),
        }
    }
}

/// Marks in the scratch buffers.
const STATUS_MISSING: u32 = u32::MAX;
const STATUS_BAD: u32 = u32::MAX - 1;
const CODE_NULL: u32 = u32::MAX;
/// Latency marks: valid latencies are finite and ≥ 0.
const LAT_NULL: f64 = -1.0;
const LAT_BAD: f64 = -2.0;

fn is_null(nulls: Option<&NullBuffer>, i: usize) -> bool {
    nulls.is_some_and(|n| i < n.len() && n.is_null(i))
}

/// Statuses from this one up share its [`row_info`]: a classifier's failure set covers
/// 0..=999 only ([`crate::classify::StatusSet`]) and they are all in no status class.
const INFO_TABLE_TOP: u32 = 1000;

/// [`row_info`] of statuses 0..=[`INFO_TABLE_TOP`] under `classifier`.
fn info_table(classifier: &Classifier) -> [u8; INFO_TABLE_TOP as usize + 1] {
    let mut t = [0; INFO_TABLE_TOP as usize + 1];
    for (s, o) in t.iter_mut().enumerate() {
        let s = s as u16;
        *o = row_info(classifier.is_success(s, None), s);
    }
    t
}

/// Per-chunk typed scratch buffers.
struct Scratch {
    ts: Vec<i64>,
    status: Vec<u32>,
    latency: Vec<f64>,
    /// The success column's value (0 or 1; 2: null or no column).
    success: Vec<u8>,
    /// Success verdict and status class ([`row_info`]).
    info: Vec<u8>,
    tcode: Vec<u32>,
    vcode: Vec<u32>,
    /// Sketch bin of each latency, computed in its own (vectorisable) loop.
    bin: Vec<i32>,
    /// Key of each row from the caches ([`SKIP_ROW`]: refused before the aggregator).
    key: Vec<KeyId>,
}

#[inline(always)]
fn fill_status(col: &NumCol, start: usize, out: &mut [u32]) {
    with_nums!(col.nums, v => {
        let src = v.get(start..start + out.len()).unwrap_or(&[]);
        for (o, x) in out.iter_mut().zip(src) {
            let s = x.to_u32_upto(u16::MAX as u32);
            *o = if s == u32::MAX { STATUS_BAD } else { s };
        }
    });
    mark_nulls(col.nulls, start, out, STATUS_MISSING);
}

#[inline(always)]
fn fill_codes(col: &NumCol, start: usize, out: &mut [u32]) {
    with_nums!(col.nums, v => {
        let src = v.get(start..start + out.len()).unwrap_or(&[]);
        for (o, x) in out.iter_mut().zip(src) {
            *o = x.to_u32_upto(CODE_NULL - 1); // u32::MAX = CODE_NULL when out of range
        }
    });
    mark_nulls(col.nulls, start, out, CODE_NULL);
}

#[inline(always)]
fn fill_latency(col: &NumCol, factor: f64, start: usize, out: &mut [f64]) {
    with_nums!(col.nums, v => {
        let src = v.get(start..start + out.len()).unwrap_or(&[]);
        for (o, x) in out.iter_mut().zip(src) {
            let ms = x.to_f64() * factor;
            // Finite and ≥ 0 (false for NaN), then capped as `aggregate::clean_latency`;
            // plain float comparisons vectorise (`is_finite` and `min` became integer
            // bit tests and NaN handling).
            *o = if (0.0..=f64::MAX).contains(&ms) {
                if ms < MAX_VALUE_MS {
                    ms
                } else {
                    MAX_VALUE_MS
                }
            } else {
                LAT_BAD
            };
        }
    });
    mark_nulls(col.nulls, start, out, LAT_NULL);
}

#[inline(always)]
fn fill_ts(col: &TsCol, now_ms: i64, start: usize, out: &mut [i64]) {
    let src = col.values.get(start..start + out.len()).unwrap_or(&[]);
    match col.unit {
        TimeUnit::Second => out
            .iter_mut()
            .zip(src)
            .for_each(|(o, x)| *o = x.saturating_mul(1000)),
        TimeUnit::Millisecond => out.iter_mut().zip(src).for_each(|(o, x)| *o = *x),
        TimeUnit::Microsecond => out
            .iter_mut()
            .zip(src)
            .for_each(|(o, x)| *o = x.div_euclid(1000)),
        TimeUnit::Nanosecond => out
            .iter_mut()
            .zip(src)
            .for_each(|(o, x)| *o = x.div_euclid(1_000_000)),
    }
    mark_nulls(col.nulls, start, out, now_ms);
}

fn fill_success(col: &BooleanArray, start: usize, out: &mut [u8]) {
    for (i, o) in out.iter_mut().enumerate() {
        let row = start + i;
        *o = if row < col.len() && col.is_valid(row) {
            col.value(row) as u8
        } else {
            2
        };
    }
}

fn mark_nulls<T: Copy>(nulls: Option<&NullBuffer>, start: usize, out: &mut [T], mark: T) {
    if let Some(n) = nulls {
        if n.null_count() == 0 {
            return;
        }
        for (i, o) in out.iter_mut().enumerate() {
            if is_null(Some(n), start + i) {
                *o = mark;
            }
        }
    }
}

/// Key caches for one batch.
struct KeyResolver<'a> {
    /// Direct-mapped cache for dictionary codes: (tcode, vcode, key).
    pairs: Vec<(u32, u32, KeyId)>,
    /// Most recently used (target, version, key) for plain strings; front = newest.
    recent: Vec<(&'a str, &'a str, KeyId)>,
    /// Direct-mapped cache for Utf8View columns: (target view, version view, key).
    views: Vec<(u128, u128, KeyId)>,
    generation: u64,
}

/// Key of a pair in the most-recently-used list (moved to the front), if there.
#[inline]
fn recent_key<'a>(recent: &mut [(&'a str, &'a str, KeyId)], t: &str, v: &str) -> Option<KeyId> {
    let j = recent.iter().position(|(rt, rv, _)| *rt == t && *rv == v)?;
    let k = recent.get(j).map_or(NO_KEY, |e| e.2);
    if j > 0 {
        recent.swap(0, j);
    }
    Some(k)
}

/// Direct-mapped slot of a (target view, version view) pair.
#[inline]
fn view_slot(t: u128, v: u128) -> usize {
    let h = (t as u64)
        ^ ((t >> 64) as u64).rotate_left(21)
        ^ (v as u64).rotate_left(42)
        ^ (v >> 64) as u64;
    (h.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 56) as usize % PAIR_SLOTS
}

/// Where a row's key comes from when every row of a chunk is resolved from the caches.
enum KeySource<'a> {
    Codes,
    Views {
        t: (&'a [u128], Option<&'a NullBuffer>),
        v: (&'a [u128], Option<&'a NullBuffer>),
    },
    Strings,
}

impl<'a> KeySource<'a> {
    fn of(target: &StrCol<'a>, version: &StrCol<'a>) -> Self {
        match (target, version) {
            (StrCol::Dict { .. }, StrCol::Dict { .. }) => KeySource::Codes,
            (StrCol::Plain(t), StrCol::Plain(v)) => match (t.views(), v.views()) {
                (Some(t), Some(v)) => KeySource::Views { t, v },
                _ => KeySource::Strings,
            },
            _ => KeySource::Strings,
        }
    }
}

/// View of row `i`, `None` when null or out of range.
#[inline]
fn view_at((views, nulls): (&[u128], Option<&NullBuffer>), i: usize) -> Option<u128> {
    if is_null(nulls, i) {
        None
    } else {
        views.get(i).copied()
    }
}

const PAIR_SLOTS: usize = 256;
/// Marks an empty pair slot / an unattributable pair / a row without key.
const NO_KEY: KeyId = KeyId::MAX;
const RECENT: usize = 8;

impl<'a> KeyResolver<'a> {
    /// Drop cached ids if the aggregator evicted keys (ids may have been reused).
    fn check_generation(&mut self, agg: &Aggregator) {
        if agg.key_generation() != self.generation {
            self.generation = agg.key_generation();
            self.pairs.fill((CODE_NULL, CODE_NULL, NO_KEY));
            self.recent.clear();
            self.views.fill((0, 0, NO_KEY)); // (0, 0): empty strings, unattributable
        }
    }

    /// Key of one row (`tcode`/`vcode`: its dictionary codes, if dictionaries).
    #[inline]
    fn resolve(
        &mut self,
        agg: &mut Aggregator,
        target: &StrCol<'a>,
        version: &StrCol<'a>,
        row: usize,
        (tcode, vcode): (u32, u32),
    ) -> Result<KeyId, Reason> {
        if let (StrCol::Dict { .. }, StrCol::Dict { .. }) = (target, version) {
            return self.resolve_codes(agg, target, version, tcode, vcode);
        }
        if let (StrCol::Plain(ta), StrCol::Plain(va)) = (target, version) {
            if let (Some(tv), Some(vv)) = (ta.views(), va.views()) {
                return self.resolve_views(agg, (*ta, tv), (*va, vv), row);
            }
        }
        self.resolve_strs(agg, target.get(row, tcode), version.get(row, vcode))
    }

    /// Key of a (target, version) pair of strings, through the most-recently-used list.
    fn resolve_strs(
        &mut self,
        agg: &mut Aggregator,
        t: Option<&'a str>,
        v: Option<&'a str>,
    ) -> Result<KeyId, Reason> {
        let (Some(t), Some(v)) = (t, v) else {
            return Err(Reason::UnattributableVersion);
        };
        if t.is_empty() || v.is_empty() {
            return Err(Reason::UnattributableVersion);
        }
        if let Some(k) = recent_key(&mut self.recent, t, v) {
            return Ok(k);
        }
        let key = agg.key(t, v)?;
        self.check_generation(agg);
        self.recent.truncate(RECENT - 1);
        self.recent.insert(0, (t, v, key));
        Ok(key)
    }

    /// Key of a row of two Utf8View columns, cached by the rows' views.
    #[inline]
    fn resolve_views(
        &mut self,
        agg: &mut Aggregator,
        (target, tviews): (StrArr<'a>, (&'a [u128], Option<&'a NullBuffer>)),
        (version, vviews): (StrArr<'a>, (&'a [u128], Option<&'a NullBuffer>)),
        row: usize,
    ) -> Result<KeyId, Reason> {
        let (Some(t), Some(v)) = (view_at(tviews, row), view_at(vviews, row)) else {
            return Err(Reason::UnattributableVersion);
        };
        let slot = view_slot(t, v);
        let key = match self.views.get(slot) {
            Some(&(a, b, k)) if a == t && b == v => k,
            _ => {
                // Long strings have a view per row (buffer offsets differ): compare them.
                let key = match self.resolve_strs(agg, target.get(row), version.get(row)) {
                    Ok(k) => k,
                    Err(Reason::UnattributableVersion) => NO_KEY,
                    Err(e) => return Err(e),
                };
                if let Some(e) = self.views.get_mut(slot) {
                    *e = (t, v, key);
                }
                key
            }
        };
        if key == NO_KEY {
            Err(Reason::UnattributableVersion)
        } else {
            Ok(key)
        }
    }

    /// Keys of a chunk's rows from the caches alone (no aggregator call) into `sc.key`:
    /// [`SKIP_ROW`] for rows refused before the aggregator (counted in `refused`). False
    /// when some row's pair is not cached yet: the chunk then goes row by row.
    fn peek_chunk(
        &mut self,
        src: &KeySource<'a>,
        (target, version): (&StrCol<'a>, &StrCol<'a>),
        sc: &mut Scratch,
        (start, len): (usize, usize),
        refused: &mut ReasonCounts,
    ) -> bool {
        let Scratch {
            status,
            latency,
            key,
            tcode,
            vcode,
            ..
        } = sc;
        let (status, latency, out) = (&status[..len], &latency[..len], &mut key[..len]);
        let codes = tcode.iter().zip(vcode.iter());
        match src {
            KeySource::Codes => {
                let pairs = &self.pairs;
                peek_rows(true, status, latency, out, refused, codes, |(&tc, &vc)| {
                    if tc == CODE_NULL || vc == CODE_NULL {
                        return Some(NO_KEY);
                    }
                    let slot = (tc.wrapping_mul(0x9E37_79B9) ^ vc) as usize % PAIR_SLOTS;
                    match pairs.get(slot) {
                        Some(&(t, v, k)) if t == tc && v == vc => Some(k),
                        _ => None,
                    }
                })
            }
            KeySource::Views { t, v } => {
                let (views, recent) = (&mut self.views, &mut self.recent);
                let (tv, vv) = (*t, *v);
                let (ta, va) = match (target, version) {
                    (StrCol::Plain(ta), StrCol::Plain(va)) => (*ta, *va),
                    _ => return false,
                };
                peek_rows(
                    false,
                    status,
                    latency,
                    out,
                    refused,
                    start..start + len,
                    |row| {
                        let (Some(t), Some(v)) = (view_at(tv, row), view_at(vv, row)) else {
                            return Some(NO_KEY);
                        };
                        let slot = view_slot(t, v);
                        match views.get(slot) {
                            Some(&(a, b, k)) if a == t && b == v => Some(k),
                            _ => {
                                let (ts, vs) = (ta.get(row)?, va.get(row)?);
                                let k = if ts.is_empty() || vs.is_empty() {
                                    NO_KEY
                                } else {
                                    recent_key(recent, ts, vs)?
                                };
                                if let Some(e) = views.get_mut(slot) {
                                    *e = (t, v, k);
                                }
                                Some(k)
                            }
                        }
                    },
                )
            }
            KeySource::Strings => {
                let recent = &mut self.recent;
                let rows = (start..start + len).zip(codes);
                peek_rows(
                    false,
                    status,
                    latency,
                    out,
                    refused,
                    rows,
                    |(row, (&tc, &vc))| {
                        let (Some(t), Some(v)) = (target.get(row, tc), version.get(row, vc)) else {
                            return Some(NO_KEY);
                        };
                        if t.is_empty() || v.is_empty() {
                            return Some(NO_KEY);
                        }
                        recent_key(recent, t, v)
                    },
                )
            }
        }
    }

    #[inline]
    fn resolve_codes(
        &mut self,
        agg: &mut Aggregator,
        target: &StrCol<'a>,
        version: &StrCol<'a>,
        tcode: u32,
        vcode: u32,
    ) -> Result<KeyId, Reason> {
        if tcode == CODE_NULL || vcode == CODE_NULL {
            return Err(Reason::UnattributableVersion);
        }
        let slot = (tcode.wrapping_mul(0x9E37_79B9) ^ vcode) as usize % PAIR_SLOTS;
        let key = match self.pairs.get(slot) {
            Some(&(t, v, k)) if t == tcode && v == vcode => k,
            _ => {
                let key = match (target.get(0, tcode), version.get(0, vcode)) {
                    (Some(t), Some(v)) if !t.is_empty() && !v.is_empty() => agg.key(t, v)?,
                    _ => NO_KEY,
                };
                self.check_generation(agg);
                if let Some(e) = self.pairs.get_mut(slot) {
                    *e = (tcode, vcode, key);
                }
                key
            }
        };
        if key == NO_KEY {
            Err(Reason::UnattributableVersion)
        } else {
            Ok(key)
        }
    }
}

/// Keys of rows (`lookup`: `None` = not cached, `Some(NO_KEY)` = unattributable) after
/// the row rules that come before the key; false at the first row not cached.
#[inline]
fn peek_rows<I: Iterator>(
    cheap_lookup: bool,
    status: &[u32],
    latency: &[f64],
    out: &mut [KeyId],
    refused: &mut ReasonCounts,
    inputs: I,
    mut lookup: impl FnMut(I::Item) -> Option<KeyId>,
) -> bool {
    // Usually no row is refused for its status or latency (two vectorised scans): then
    // the loop only looks keys up. (Only for cheap lookups: a second copy of the view
    // lookup made the Utf8View case slower.)
    if !cheap_lookup {
        return peek_rows_checked(status, latency, out, refused, inputs, lookup);
    }
    let max_status = status.iter().fold(0, |m, &s| if s > m { s } else { m });
    let min_latency = latency
        .iter()
        .fold(f64::INFINITY, |m, &l| if l < m { l } else { m });
    if max_status < STATUS_BAD && min_latency > LAT_BAD {
        for (o, input) in out.iter_mut().zip(inputs) {
            *o = match lookup(input) {
                None => return false,
                Some(NO_KEY) => {
                    refused.add(Reason::UnattributableVersion);
                    SKIP_ROW
                }
                Some(k) => k,
            };
        }
        return true;
    }
    peek_rows_checked(status, latency, out, refused, inputs, lookup)
}

/// [`peek_rows`] checking each row's status and latency.
#[inline]
fn peek_rows_checked<I: Iterator>(
    status: &[u32],
    latency: &[f64],
    out: &mut [KeyId],
    refused: &mut ReasonCounts,
    inputs: I,
    mut lookup: impl FnMut(I::Item) -> Option<KeyId>,
) -> bool {
    let rows = out.iter_mut().zip(status).zip(latency).zip(inputs);
    for (((o, &st), &lat), input) in rows {
        let early = match st {
            STATUS_MISSING => Some(Reason::MissingField),
            STATUS_BAD => Some(Reason::BadNumber),
            _ if lat == LAT_BAD => Some(Reason::BadNumber),
            _ => None,
        };
        *o = match early {
            Some(r) => {
                refused.add(r);
                SKIP_ROW
            }
            None => match lookup(input) {
                None => return false,
                Some(NO_KEY) => {
                    refused.add(Reason::UnattributableVersion);
                    SKIP_ROW
                }
                Some(k) => k,
            },
        };
    }
    true
}

/// Fold every row of `batch` into `agg`. Errors (a missing column, a column of the wrong
/// type) name the column and leave the aggregator untouched.
pub fn ingest_batch(
    agg: &mut Aggregator,
    classifier: &Classifier,
    batch: &RecordBatch,
    mapping: &ColumnMapping,
    now_ms: i64,
) -> Result<IngestStats, String> {
    #[cfg(target_arch = "x86_64")]
    if let Some(simd) = Avx2::detect() {
        // SAFETY: `simd` exists, so `Avx2::detect` (a runtime
        // `is_x86_feature_detected!("avx2")`) saw AVX2 on this CPU.
        return unsafe { ingest_batch_avx2(simd, agg, classifier, batch, mapping, now_ms) };
    }
    ingest_batch_with(agg, classifier, batch, mapping, now_ms)
}

/// [`ingest_batch`] compiled with AVX2: the per-chunk column loops (conversions, sketch
/// bins, the chunk's time range) vectorise 4 or 8 lanes wide, where the baseline's SSE2
/// has no 64-bit integer compare and leaves them scalar (~30 instructions per row less).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn ingest_batch_avx2(
    _simd: Avx2,
    agg: &mut Aggregator,
    classifier: &Classifier,
    batch: &RecordBatch,
    mapping: &ColumnMapping,
    now_ms: i64,
) -> Result<IngestStats, String> {
    ingest_batch_with(agg, classifier, batch, mapping, now_ms)
}

/// The body of [`ingest_batch`], inlined into each compilation of it.
#[inline(always)]
fn ingest_batch_with(
    agg: &mut Aggregator,
    classifier: &Classifier,
    batch: &RecordBatch,
    mapping: &ColumnMapping,
    now_ms: i64,
) -> Result<IngestStats, String> {
    // Resolve and type-check every column before touching the aggregator.
    let target = StrCol::of(column(batch, &mapping.target)?, &mapping.target)?;
    let version = StrCol::of(column(batch, &mapping.version)?, &mapping.version)?;
    let status = num_col(
        column(batch, &mapping.status)?,
        &mapping.status,
        "an integer status",
        false,
    )?;
    let latency = num_col(
        column(batch, &mapping.latency)?,
        &mapping.latency,
        "a numeric latency",
        true,
    )?;
    let ts = if mapping.timestamp.is_empty() {
        None
    } else {
        Some(ts_col(
            column(batch, &mapping.timestamp)?,
            &mapping.timestamp,
        )?)
    };
    let success = match &mapping.success {
        None => None,
        Some(name) => Some(
            column(batch, name)?
                .as_boolean_opt()
                .ok_or_else(|| format!("column '{name}': expected Boolean"))?,
        ),
    };
    let factor = mapping.latency_unit.to_ms_factor();
    let rows = batch.num_rows();
    let mut stats = IngestStats {
        rows: rows as u64,
        ..IngestStats::default()
    };
    let mut sc = Scratch {
        ts: vec![now_ms; CHUNK],
        status: vec![0; CHUNK],
        latency: vec![LAT_NULL; CHUNK],
        success: vec![2; CHUNK],
        info: vec![0; CHUNK],
        tcode: vec![0; CHUNK],
        vcode: vec![0; CHUNK],
        bin: vec![ZERO_BIN; CHUNK],
        key: vec![SKIP_ROW; CHUNK],
    };
    let mut chunk_scratch = ChunkScratch::default();
    // Worth building when it serves more rows than it has entries.
    let info_table = (rows > INFO_TABLE_TOP as usize).then(|| info_table(classifier));
    let source = KeySource::of(&target, &version);
    let mut res = KeyResolver {
        pairs: vec![(CODE_NULL, CODE_NULL, NO_KEY); PAIR_SLOTS],
        recent: Vec::with_capacity(RECENT),
        views: vec![(0, 0, NO_KEY); PAIR_SLOTS],
        generation: agg.key_generation(),
    };

    let mut start = 0;
    while start < rows {
        let len = CHUNK.min(rows - start);
        let ts_buf = &mut sc.ts[..len];
        match &ts {
            Some(col) => fill_ts(col, now_ms, start, ts_buf),
            None => ts_buf.fill(now_ms),
        }
        fill_status(&status, start, &mut sc.status[..len]);
        fill_latency(&latency, factor, start, &mut sc.latency[..len]);
        // `bin_of` without branches (same values), so the loop can vectorise.
        for (b, &l) in sc.bin[..len].iter_mut().zip(&sc.latency[..len]) {
            *b = bin_of_branchless(l);
        }
        let info = &mut sc.info[..len];
        match &info_table {
            Some(t) => {
                for (o, &st) in info.iter_mut().zip(&sc.status[..len]) {
                    *o = t[st.min(INFO_TABLE_TOP) as usize];
                }
            }
            None => {
                for (o, &st) in info.iter_mut().zip(&sc.status[..len]) {
                    let st = st.min(u16::MAX as u32) as u16;
                    *o = row_info(classifier.is_success(st, None), st);
                }
            }
        }
        if let Some(col) = success {
            // The success column overrides the verdict where it has a value.
            fill_success(col, start, &mut sc.success[..len]);
            for (o, &s) in info.iter_mut().zip(&sc.success[..len]) {
                if s != 2 {
                    *o = (*o & !1) | s;
                }
            }
        }
        if let StrCol::Dict { codes, .. } = &target {
            fill_codes(codes, start, &mut sc.tcode[..len]);
        }
        if let StrCol::Dict { codes, .. } = &version {
            fill_codes(codes, start, &mut sc.vcode[..len]);
        }
        // Fast path: every key is already cached, and the aggregator takes the chunk in
        // one go (no row can be refused for its time).
        let mut refused = ReasonCounts::default();
        if res.peek_chunk(
            &source,
            (&target, &version),
            &mut sc,
            (start, len),
            &mut refused,
        ) {
            let rows = ChunkRows {
                key: &sc.key[..len],
                ts_ms: &sc.ts[..len],
                info: &sc.info[..len],
                status: &sc.status[..len],
                latency: &sc.latency[..len],
                bin: &sc.bin[..len],
            };
            if let Some((folded, late)) = agg.observe_chunk(&rows, &mut chunk_scratch) {
                #[cfg(test)]
                tests::FAST_CHUNKS.with(|c| c.set(c.get() + 1));
                stats.accepted += folded;
                for _ in 0..late {
                    stats.reasons.add(Reason::DroppedLate);
                }
                stats.reasons.merge(&refused);
                start += len;
                continue;
            }
        }
        // Otherwise row by row. Keys are resolved right before the row is observed: resolving may
        // evict idle keys and reuse their ids, so an id must be used at once.
        let both_dict = matches!(
            (&target, &version),
            (StrCol::Dict { .. }, StrCol::Dict { .. })
        );
        let rows_of_chunk = sc.ts[..len]
            .iter()
            .zip(&sc.status[..len])
            .zip(&sc.latency[..len])
            .zip(&sc.info[..len])
            .zip(sc.tcode[..len].iter().zip(&sc.vcode[..len]))
            .zip(&sc.bin[..len]);
        for (i, (((((&ts_ms, &st), &lat), &succ), (&tc, &vc)), &bin)) in rows_of_chunk.enumerate() {
            let status = match st {
                STATUS_MISSING => Err(Reason::MissingField),
                STATUS_BAD => Err(Reason::BadNumber),
                s => Ok(s as u16),
            };
            let outcome = status.and_then(|status| {
                let latency_ms = if lat >= 0.0 {
                    Some(lat)
                } else if lat == LAT_NULL {
                    None
                } else {
                    return Err(Reason::BadNumber);
                };
                let key = if both_dict {
                    res.resolve_codes(agg, &target, &version, tc, vc)?
                } else {
                    res.resolve(agg, &target, &version, start + i, (tc, vc))?
                };
                let ev = Event {
                    ts_ms,
                    status,
                    success: succ & 1 != 0,
                    latency_ms,
                    flags: Flags::NONE,
                };
                agg.observe_binned(key, &ev, latency_ms, bin)
            });
            match outcome {
                Ok(()) => stats.accepted += 1,
                Err(r) => stats.reasons.add(r),
            }
        }
        start += len;
    }
    Ok(stats)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aggregate::{Config, WindowQuery};
    use crate::sketch::tests::{timed, Rng};
    use arrow_array::builder::{StringDictionaryBuilder, StringViewBuilder};
    use arrow_array::types::{Int16Type, UInt16Type};
    use arrow_array::{
        ArrayRef, DictionaryArray, Float32Array, Float64Array, Int16Array, Int32Array, Int64Array,
        TimestampMicrosecondArray, UInt16Array,
    };
    use std::sync::Arc;

    thread_local! {
        /// Chunks folded by the fast path (`Aggregator::observe_chunk`) on this thread.
        pub(super) static FAST_CHUNKS: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
    }

    fn agg() -> Aggregator {
        Aggregator::new(Config {
            ring_secs: 60,
            ..Config::default()
        })
        .unwrap()
    }

    fn batch(cols: Vec<(&str, ArrayRef)>) -> RecordBatch {
        RecordBatch::try_from_iter(cols).unwrap()
    }

    fn all(a: &Aggregator) -> Vec<crate::aggregate::KeySnapshot> {
        a.snapshot(&WindowQuery {
            window_ms: None,
            end_ms: None,
            target: None,
            series: false,
        })
    }

    #[test]
    fn plain_strings_with_nulls_and_units() {
        let b = batch(vec![
            (
                "target",
                Arc::new(StringArray::from(vec![
                    Some("reviews"),
                    Some("reviews"),
                    None,
                    Some("reviews"),
                    Some("reviews"),
                    Some("reviews"),
                    Some(""),
                ])) as ArrayRef,
            ),
            (
                "version",
                Arc::new(StringArray::from(vec![
                    "v1", "v2", "v1", "v1", "v2", "v1", "v1",
                ])),
            ),
            (
                "status",
                Arc::new(Int32Array::from(vec![
                    Some(200),
                    Some(503),
                    Some(200),
                    None,
                    Some(70_000),
                    Some(200),
                    Some(200),
                ])),
            ),
            (
                "latency_ms",
                Arc::new(Float64Array::from(vec![
                    Some(0.012),
                    Some(0.020),
                    Some(1.0),
                    Some(1.0),
                    Some(1.0),
                    None,
                    Some(1.0),
                ])),
            ),
            (
                "timestamp",
                Arc::new(TimestampMicrosecondArray::from(vec![
                    Some(1_700_000_000_000_000),
                    Some(1_700_000_000_500_000),
                    None,
                    None,
                    None,
                    None,
                    None,
                ])),
            ),
        ]);
        let mut a = agg();
        let mapping = ColumnMapping {
            latency_unit: Unit::S,
            ..ColumnMapping::default()
        };
        let st = ingest_batch(
            &mut a,
            &Classifier::default(),
            &b,
            &mapping,
            1_700_000_000_900,
        )
        .unwrap();
        assert_eq!(st.rows, 7);
        assert_eq!(st.accepted, 3);
        assert_eq!(st.reasons.get(Reason::UnattributableVersion), 2);
        assert_eq!(st.reasons.get(Reason::MissingField), 1);
        assert_eq!(st.reasons.get(Reason::BadNumber), 1);
        let snap = all(&a);
        assert_eq!(snap.len(), 2);
        let v1 = &snap[0];
        assert_eq!(
            (v1.version.as_str(), v1.requests, v1.latency_count),
            ("v1", 2, 1)
        );
        assert_eq!(v1.min_ms, Some(12.0)); // seconds → ms
        let v2 = &snap[1];
        assert_eq!((v2.requests, v2.failures, v2.max_ms), (1, 1, Some(20.0)));
        assert_eq!(a.watermark_ms(), Some(1_700_000_000_900));
    }

    #[test]
    fn dictionaries_views_and_success_column() {
        let mut tb = StringDictionaryBuilder::<Int32Type>::new();
        let mut vb = StringDictionaryBuilder::<UInt8Type>::new();
        let mut view = StringViewBuilder::new();
        for i in 0..3000 {
            tb.append_value("productpage-with-a-long-name");
            if i % 100 == 99 {
                vb.append_null();
            } else {
                vb.append_value(if i % 3 == 0 { "canary" } else { "primary" });
            }
            view.append_value(if i % 3 == 0 { "canary" } else { "primary" });
        }
        let t: DictionaryArray<Int32Type> = tb.finish();
        let v: DictionaryArray<UInt8Type> = vb.finish();
        let status: Vec<u16> = (0..3000)
            .map(|i| if i % 10 == 0 { 500 } else { 200 })
            .collect();
        let succ: Vec<Option<bool>> = (0..3000)
            .map(|i| if i % 2 == 0 { None } else { Some(true) })
            .collect();
        let lat: Vec<f32> = (0..3000).map(|i| (i % 50) as f32).collect();
        let ts: Vec<i64> = (0..3000).map(|i| 1_000_000 + i).collect();
        let b = batch(vec![
            ("svc", Arc::new(t) as ArrayRef),
            ("ver", Arc::new(v)),
            ("code", Arc::new(UInt16Array::from(status.clone()))),
            ("dur", Arc::new(Float32Array::from(lat.clone()))),
            ("ts", Arc::new(Int64Array::from(ts.clone()))),
            ("ok", Arc::new(BooleanArray::from(succ))),
        ]);
        let mapping = ColumnMapping {
            target: "svc".into(),
            version: "ver".into(),
            status: "code".into(),
            latency: "dur".into(),
            latency_unit: Unit::Ms,
            timestamp: "ts".into(),
            success: Some("ok".into()),
        };
        let mut a = agg();
        let st = ingest_batch(&mut a, &Classifier::default(), &b, &mapping, 0).unwrap();
        assert_eq!(st.accepted, 2970);
        assert_eq!(st.reasons.get(Reason::UnattributableVersion), 30);
        let snap = all(&a);
        let canary = snap.iter().find(|s| s.version == "canary").unwrap();
        // Rows i ≡ 0 (mod 3), minus the null versions (i ≡ 99 mod 100 and ≡ 0 mod 3).
        let want: Vec<usize> = (0..3000).filter(|i| i % 3 == 0 && i % 100 != 99).collect();
        assert_eq!(canary.requests, want.len() as u64);
        // Success column overrides for odd rows; the classifier decides for even rows.
        let fails = want.iter().filter(|&&i| i % 2 == 0 && i % 10 == 0).count();
        assert_eq!(canary.failures, fails as u64);

        // Same figures with the version as Utf8View (Polars' string export).
        let b2 = batch(vec![
            ("svc", b.column(0).clone()),
            ("ver", Arc::new(view.finish()) as ArrayRef),
            ("code", b.column(2).clone()),
            ("dur", b.column(3).clone()),
            ("ts", b.column(4).clone()),
        ]);
        let mut a2 = agg();
        let m2 = ColumnMapping {
            success: None,
            ..mapping
        };
        let st = ingest_batch(&mut a2, &Classifier::default(), &b2, &m2, 0).unwrap();
        assert_eq!(st.accepted, 3000);
        let c2 = all(&a2)
            .into_iter()
            .find(|s| s.version == "canary")
            .unwrap();
        assert_eq!(c2.requests, 1000);
        assert_eq!(c2.failures, 100);
    }

    #[test]
    fn column_errors_name_the_column() {
        let b = batch(vec![
            ("target", Arc::new(StringArray::from(vec!["a"])) as ArrayRef),
            ("version", Arc::new(Int32Array::from(vec![1]))),
            ("status", Arc::new(Float64Array::from(vec![200.0]))),
            ("latency_ms", Arc::new(Float64Array::from(vec![1.0]))),
        ]);
        let c = Classifier::default();
        let mut a = agg();
        let err = ingest_batch(&mut a, &c, &b, &ColumnMapping::default(), 0).unwrap_err();
        assert!(err.starts_with("column 'version'"), "{err}");
        let m = ColumnMapping {
            version: "target".into(),
            ..ColumnMapping::default()
        };
        let err = ingest_batch(&mut a, &c, &b, &m, 0).unwrap_err();
        assert!(err.starts_with("column 'status'"), "{err}");
        let m = ColumnMapping {
            version: "target".into(),
            status: "nope".into(),
            ..ColumnMapping::default()
        };
        assert_eq!(
            ingest_batch(&mut a, &c, &b, &m, 0).unwrap_err(),
            "column 'nope' not found"
        );
        let m = ColumnMapping {
            version: "target".into(),
            status: "latency_ms".into(),
            ..ColumnMapping::default()
        };
        let err = ingest_batch(&mut a, &c, &b, &m, 0).unwrap_err();
        assert!(
            err.starts_with("column 'status'") || err.contains("latency_ms"),
            "{err}"
        );
        let m = ColumnMapping {
            version: "target".into(),
            status: "version".into(),
            timestamp: String::new(),
            ..ColumnMapping::default()
        };
        let st = ingest_batch(&mut a, &c, &b, &m, 5_000).unwrap();
        assert_eq!(st.accepted, 1);
        assert_eq!(a.watermark_ms(), Some(5_000));
        assert_eq!(a.key_count(), 1);
    }

    #[test]
    fn sliced_batches_and_key_limit() {
        let n = 5000;
        let t: Vec<String> = (0..n).map(|i| format!("t{}", i % 7)).collect();
        let b = batch(vec![
            (
                "target",
                Arc::new(StringArray::from_iter_values(t.iter())) as ArrayRef,
            ),
            (
                "version",
                Arc::new(StringArray::from_iter_values((0..n).map(|_| "v"))),
            ),
            (
                "status",
                Arc::new(Int64Array::from_iter_values((0..n).map(|_| 200))),
            ),
            (
                "latency_ms",
                Arc::new(Int64Array::from_iter_values((0..n).map(|i| i as i64))),
            ),
            (
                "timestamp",
                Arc::new(Int64Array::from_iter_values((0..n).map(|i| i as i64))),
            ),
        ]);
        let sliced = b.slice(1234, 2000);
        let mut a = Aggregator::new(Config {
            ring_secs: 60,
            max_keys: 5,
            ..Config::default()
        })
        .unwrap();
        let st = ingest_batch(
            &mut a,
            &Classifier::default(),
            &sliced,
            &ColumnMapping::default(),
            0,
        )
        .unwrap();
        assert_eq!(st.rows, 2000);
        assert_eq!(st.accepted + st.reasons.get(Reason::KeyLimit), 2000);
        assert_eq!(a.key_count(), 5);
        let snap = all(&a);
        let min = snap
            .iter()
            .filter_map(|s| s.min_ms)
            .fold(f64::MAX, f64::min);
        assert_eq!(min, 1234.0); // slice offset honoured
        let total: u64 = snap.iter().map(|s| s.requests).sum();
        assert_eq!(total, st.accepted);
    }

    #[test]
    fn eviction_inside_a_batch_never_misattributes() {
        // "a" is idle; its first row refreshes it, so "b" finds no idle key to evict.
        for dict in [false, true] {
            let mut b2 = two_keys_one_idle();
            let (t, v): (ArrayRef, ArrayRef) = if dict {
                let mut tb = StringDictionaryBuilder::<Int32Type>::new();
                let mut vb = StringDictionaryBuilder::<Int32Type>::new();
                for x in ["a", "b"] {
                    tb.append_value("t");
                    vb.append_value(x);
                }
                (Arc::new(tb.finish()), Arc::new(vb.finish()))
            } else {
                (
                    Arc::new(StringArray::from(vec!["t", "t"])),
                    Arc::new(StringArray::from(vec!["a", "b"])),
                )
            };
            let bt = batch(vec![
                ("target", t),
                ("version", v),
                (
                    "status",
                    Arc::new(Int32Array::from(vec![200, 200])) as ArrayRef,
                ),
                ("latency_ms", Arc::new(Float64Array::from(vec![1.0, 2.0]))),
                (
                    "timestamp",
                    Arc::new(Int64Array::from(vec![100_500, 100_600])),
                ),
            ]);
            let st = ingest_batch(
                &mut b2,
                &Classifier::default(),
                &bt,
                &ColumnMapping::default(),
                0,
            )
            .unwrap();
            assert_eq!(st.accepted, 1);
            assert_eq!(st.reasons.get(Reason::KeyLimit), 1);
            let snap = all(&b2);
            let sa = snap.iter().find(|s| s.version == "a").unwrap();
            assert_eq!((sa.requests, sa.max_ms), (2, Some(1.0)));
            assert!(snap.iter().all(|s| s.version != "b"));
        }
    }

    /// The status table gives every status (0..=65535) the verdict and class of the
    /// classifier and `status_class`, for several failure sets.
    #[test]
    fn info_table_matches_classifier_for_every_status() {
        use crate::classify::StatusSet;
        let custom = Classifier {
            failure_status: StatusSet::empty().with_range(400, 999),
            grpc_failure_mask: 0,
        };
        for c in [Classifier::default(), Classifier::flagger(), custom] {
            let t = info_table(&c);
            for st in 0..=u16::MAX {
                let want = row_info(c.is_success(st, None), st);
                assert_eq!(
                    t[(st as u32).min(INFO_TABLE_TOP) as usize],
                    want,
                    "status {st}"
                );
            }
        }
    }

    /// Full aggregator (max_keys 2): t/a idle since 0, t/c active at 100 s.
    fn two_keys_one_idle() -> Aggregator {
        let mut a = Aggregator::new(Config {
            ring_secs: 60,
            max_keys: 2,
            idle_evict_ms: 60_000,
            allowed_lateness_ms: 59_000,
            ..Config::default()
        })
        .unwrap();
        for (v, ts) in [("a", 0), ("c", 100_000)] {
            let k = a.key("t", v).unwrap();
            a.observe(
                k,
                &Event {
                    ts_ms: ts,
                    status: 200,
                    success: true,
                    latency_ms: None,
                    flags: Flags::NONE,
                },
            )
            .unwrap();
        }
        a
    }

    /// The reference: the documented row rules applied with `Aggregator::observe`.
    #[allow(clippy::type_complexity)]
    fn reference(
        rows: &[(
            Option<&str>,
            Option<&str>,
            Option<i64>,
            Option<f64>,
            Option<i64>,
        )],
        now_ms: i64,
    ) -> (Aggregator, IngestStats) {
        let mut a = agg();
        let c = Classifier::default();
        let mut st = IngestStats {
            rows: rows.len() as u64,
            ..IngestStats::default()
        };
        for (t, v, status, lat, ts) in rows {
            let outcome = (|| {
                let status = match status {
                    None => return Err(Reason::MissingField),
                    Some(s) if (0..=65_535).contains(s) => *s as u16,
                    Some(_) => return Err(Reason::BadNumber),
                };
                let latency_ms = match lat {
                    None => None,
                    Some(l) if *l >= 0.0 && l.is_finite() => Some(*l),
                    Some(_) => return Err(Reason::BadNumber),
                };
                let (Some(t), Some(v)) = (t, v) else {
                    return Err(Reason::UnattributableVersion);
                };
                if t.is_empty() || v.is_empty() {
                    return Err(Reason::UnattributableVersion);
                }
                let key = a.key(t, v)?;
                let ev = Event {
                    ts_ms: ts.unwrap_or(now_ms),
                    status,
                    success: c.is_success(status, None),
                    latency_ms,
                    flags: Flags::NONE,
                };
                a.observe(key, &ev)
            })();
            match outcome {
                Ok(()) => st.accepted += 1,
                Err(r) => st.reasons.add(r),
            }
        }
        (a, st)
    }

    /// [`ingest_batch`] as this CPU runs it (AVX2 here), or its baseline compilation:
    /// the property tests check both against Event-by-Event observe.
    fn ingest_either(
        baseline: bool,
        a: &mut Aggregator,
        b: &RecordBatch,
        now_ms: i64,
    ) -> IngestStats {
        let (c, m) = (Classifier::default(), ColumnMapping::default());
        if baseline {
            ingest_batch_with(a, &c, b, &m, now_ms).unwrap()
        } else {
            ingest_batch(a, &c, b, &m, now_ms).unwrap()
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig { cases: 48, ..Default::default() })]
        /// Columnar ingest (any column encoding, nulls, bad values, chunk boundaries) gives
        /// exactly the figures of Event-by-Event observe, and never panics.
        #[test]
        fn columnar_equals_event_by_event(
            seed in proptest::prelude::any::<u64>(),
            n in 0usize..2600,
            target_dict in proptest::prelude::any::<bool>(),
            version_view in proptest::prelude::any::<bool>(),
            baseline in proptest::prelude::any::<bool>(),
        ) {
            let mut r = Rng::new(seed);
            let now_ms = 1_700_000_050_000i64;
            let targets = [Some("a"), Some("b"), None, Some("")];
            let versions = [Some("v1"), Some("v2"), None];
            let statuses = [None, Some(200), Some(503), Some(0), Some(404), Some(-1), Some(70_000), Some(204), Some(429)];
            let rows: Vec<_> = (0..n)
                .map(|_| {
                    let pick = |r: &mut Rng, k: usize| (r.next_u64() % k as u64) as usize;
                    let t = targets[if pick(&mut r, 10) == 0 { 2 + pick(&mut r, 2) } else { pick(&mut r, 2) }];
                    let v = versions[if pick(&mut r, 20) == 0 { 2 } else { pick(&mut r, 2) }];
                    let st = statuses[if pick(&mut r, 5) == 0 { pick(&mut r, 9) } else { 1 }];
                    let lat = match pick(&mut r, 12) {
                        0 => None,
                        1 => Some(0.0),
                        2 => Some(-1.0),
                        3 => Some(f64::NAN),
                        _ => Some(r.lognormal(20.0, 0.8)),
                    };
                    let ts = match pick(&mut r, 15) {
                        0 => None,
                        1 => Some(now_ms - 40_000), // too late once time has moved on
                        _ => Some(now_ms - 30_000 + (r.next_u64() % 40_000) as i64),
                    };
                    (t, v, st, lat, ts)
                })
                .collect();
            let t_col: ArrayRef = if target_dict {
                let mut b = StringDictionaryBuilder::<Int8Type>::new();
                rows.iter().for_each(|row| b.append_option(row.0));
                Arc::new(b.finish())
            } else {
                Arc::new(LargeStringArray::from(rows.iter().map(|row| row.0).collect::<Vec<_>>()))
            };
            let v_col: ArrayRef = if version_view {
                let mut b = StringViewBuilder::new();
                rows.iter().for_each(|row| b.append_option(row.1));
                Arc::new(b.finish())
            } else {
                let mut b = StringDictionaryBuilder::<UInt16Type>::new();
                rows.iter().for_each(|row| b.append_option(row.1));
                Arc::new(b.finish())
            };
            let b = batch(vec![
                ("target", t_col),
                ("version", v_col),
                ("status", Arc::new(Int64Array::from(rows.iter().map(|row| row.2).collect::<Vec<_>>())) as ArrayRef),
                ("latency_ms", Arc::new(Float64Array::from(rows.iter().map(|row| row.3).collect::<Vec<_>>()))),
                ("timestamp", Arc::new(Int64Array::from(rows.iter().map(|row| row.4).collect::<Vec<_>>()))),
            ]);
            let mut a = agg();
            let got = ingest_either(baseline, &mut a, &b, now_ms);
            let (want_agg, want) = reference(&rows, now_ms);
            proptest::prop_assert_eq!(&got, &want);
            proptest::prop_assert_eq!(all(&a), all(&want_agg));
            let q = WindowQuery { window_ms: Some(20_000), end_ms: None, target: None, series: true };
            proptest::prop_assert_eq!(a.snapshot(&q), want_agg.snapshot(&q));
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig { cases: 32, ..Default::default() })]
        /// Time-ordered rows (within the allowed lateness, so most chunks take the fast
        /// path) over several keys and column encodings give exactly the figures of
        /// Event-by-Event observe; the fast path is taken.
        #[test]
        fn fast_path_equals_event_by_event(
            seed in proptest::prelude::any::<u64>(),
            n in 4000usize..8000,
            encoding in 0u8..4,
            per_second in 200i64..3000,
            baseline in proptest::prelude::any::<bool>(),
        ) {
            let mut r = Rng::new(seed);
            let now_ms = 1_700_000_050_000i64;
            let targets = [Some("reviews"), Some("productpage-long-name-beyond-12"), Some("x"), None, Some("")];
            let versions = [Some("v1"), Some("canary-version-long-name"), None];
            let rows: Vec<_> = (0..n)
                .map(|i| {
                    let pick = |r: &mut Rng, k: usize| (r.next_u64() % k as u64) as usize;
                    let t = targets[if pick(&mut r, 200) == 0 { 3 + pick(&mut r, 2) } else { pick(&mut r, 3) }];
                    let v = versions[if pick(&mut r, 300) == 0 { 2 } else { pick(&mut r, 2) }];
                    let st = match pick(&mut r, 100) {
                        0 => None,
                        1 => Some(70_000),
                        2 => Some(0),
                        3 => Some(150),
                        4..=9 => Some(503),
                        10 => Some(404),
                        11 => Some(204),
                        // Up to 40 distinct codes: some seconds overflow the per-code slots.
                        12 | 13 => Some(280 + pick(&mut r, 40) as i64 * 5),
                        _ => Some(200),
                    };
                    let lat = match pick(&mut r, 50) {
                        0 => None,
                        1 => Some(0.0),
                        2 => Some(f64::NAN),
                        3 => Some(1e13),
                        _ => Some(r.lognormal(20.0, 1.0)),
                    };
                    let base = now_ms - 60_000 + i as i64 * 1000 / per_second;
                    let ts = match pick(&mut r, 5000) {
                        0 => None, // now_ms: ahead of the rows, later rows are late
                        1..=10 => Some(base - 30_000), // late
                        _ => Some(base - (r.next_u64() % 3000) as i64),
                    };
                    (t, v, st, lat, ts)
                })
                .collect();
            let dict_t = encoding & 1 == 1;
            let dict_v = encoding & 2 == 2;
            let t_col: ArrayRef = if dict_t {
                let mut b = StringDictionaryBuilder::<Int16Type>::new();
                rows.iter().for_each(|row| b.append_option(row.0));
                Arc::new(b.finish())
            } else {
                let mut b = StringViewBuilder::new();
                rows.iter().for_each(|row| b.append_option(row.0));
                Arc::new(b.finish())
            };
            let v_col: ArrayRef = if dict_v {
                let mut b = StringDictionaryBuilder::<UInt8Type>::new();
                rows.iter().for_each(|row| b.append_option(row.1));
                Arc::new(b.finish())
            } else if dict_t {
                Arc::new(StringArray::from(rows.iter().map(|row| row.1).collect::<Vec<_>>()))
            } else {
                let mut b = StringViewBuilder::new();
                rows.iter().for_each(|row| b.append_option(row.1));
                Arc::new(b.finish())
            };
            let b = batch(vec![
                ("target", t_col),
                ("version", v_col),
                ("status", Arc::new(Int16Array::from(rows.iter().map(|row| row.2.map(|s: i64| s as i16)).collect::<Vec<_>>())) as ArrayRef),
                ("latency_ms", Arc::new(Float64Array::from(rows.iter().map(|row| row.3).collect::<Vec<_>>()))),
                ("timestamp", Arc::new(Int64Array::from(rows.iter().map(|row| row.4).collect::<Vec<_>>()))),
            ]);
            // Status 70 000 does not fit Int16: as i16 it wraps (negative = bad, like the reference's).
            let rows: Vec<_> = rows
                .iter()
                .map(|&(t, v, st, lat, ts)| (t, v, st.map(|s| s as i16 as i64), lat, ts))
                .collect();
            let mut a = agg();
            let before = FAST_CHUNKS.with(|c| c.get());
            let got = ingest_either(baseline, &mut a, &b, now_ms);
            let fast = FAST_CHUNKS.with(|c| c.get()) - before;
            let (want_agg, want) = reference(&rows, now_ms);
            proptest::prop_assert_eq!(&got, &want);
            proptest::prop_assert_eq!(all(&a), all(&want_agg));
            let q = WindowQuery { window_ms: Some(20_000), end_ms: None, target: None, series: true };
            proptest::prop_assert_eq!(a.snapshot(&q), want_agg.snapshot(&q));
            proptest::prop_assert!(fast > 0, "fast path never taken");
        }
    }

    /// Rows of 2 keys alternating randomly, lognormal latencies; target/version columns as
    /// dictionaries (`dict`) or plain Utf8View.
    fn speed_batch(n: usize, dict: bool) -> RecordBatch {
        let mut r = Rng::new(11);
        let versions: Vec<&str> = (0..n)
            .map(|_| {
                if r.next_u64() & 1 == 0 {
                    "primary"
                } else {
                    "canary"
                }
            })
            .collect();
        let (t, v): (ArrayRef, ArrayRef) = if dict {
            let mut tb = StringDictionaryBuilder::<Int32Type>::new();
            let mut vb = StringDictionaryBuilder::<Int32Type>::new();
            for v in &versions {
                tb.append_value("reviews");
                vb.append_value(v);
            }
            (Arc::new(tb.finish()), Arc::new(vb.finish()))
        } else {
            let mut tb = StringViewBuilder::new();
            let mut vb = StringViewBuilder::new();
            for v in &versions {
                tb.append_value("reviews");
                vb.append_value(v);
            }
            (Arc::new(tb.finish()), Arc::new(vb.finish()))
        };
        let status =
            Int32Array::from_iter_values((0..n).map(|_| if r.unit() < 0.01 { 503 } else { 200 }));
        let lat = Float64Array::from_iter_values((0..n).map(|_| r.lognormal(20.0, 0.8)));
        let ts = Int64Array::from_iter_values((0..n).map(|i| 1_700_000_000_000 + i as i64 / 10));
        batch(vec![
            ("target", t),
            ("version", v),
            ("status", Arc::new(status)),
            ("latency_ms", Arc::new(lat)),
            ("timestamp", Arc::new(ts)),
        ])
    }

    /// Fixed work for instruction counts: `COLUMNAR_KEYS=dict|view valgrind --tool=callgrind
    /// --toggle-collect='*ingest_batch*' <test binary> --ignored --exact
    /// arrow_ingest::tests::callgrind_columnar` (200 000 rows, the `speed_columnar` batch).
    #[test]
    #[ignore]
    fn callgrind_columnar() {
        let n = 200_000;
        let dict = std::env::var("COLUMNAR_KEYS").map_or(true, |k| k != "view");
        let b = speed_batch(n, dict);
        let mut a = Aggregator::new(Config {
            ring_secs: 60,
            ..Config::default()
        })
        .unwrap();
        let st = ingest_batch(
            &mut a,
            &Classifier::default(),
            &b,
            &ColumnMapping::default(),
            0,
        );
        assert_eq!(st.unwrap().accepted, n as u64);
    }

    #[test]
    #[ignore]
    fn speed_columnar() {
        let n = 10_000_000;
        for dict in [true, false] {
            let b = speed_batch(n, dict);
            // Best of 3 runs, each into a fresh aggregator.
            let mut best = (f64::MAX, f64::MAX);
            for _ in 0..3 {
                let mut a = Aggregator::new(Config {
                    ring_secs: 60,
                    ..Config::default()
                })
                .unwrap();
                let (st, dt, cpu) = timed(|| {
                    ingest_batch(
                        &mut a,
                        &Classifier::default(),
                        &b,
                        &ColumnMapping::default(),
                        0,
                    )
                    .unwrap()
                });
                assert_eq!(st.accepted, n as u64);
                if cpu < best.1 {
                    best = (dt, cpu);
                }
            }
            let (dt, cpu) = best;
            println!(
                "speed_columnar ({}): {:.1} M events/CPU-s ({:.1} ns/event; wall {:.1} M/s)",
                if dict { "dictionary" } else { "Utf8View" },
                n as f64 / cpu / 1e6,
                cpu * 1e9 / n as f64,
                n as f64 / dt / 1e6,
            );
        }
    }
}
