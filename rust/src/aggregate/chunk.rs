//! Columnar fast path: fold a chunk of rows (one slice per field) in one go.
//!
//! [`Aggregator::observe_chunk`] only takes chunks for which the per-row time rules give
//! every row the same verdict whatever the order. The watermark must be set. Rows older
//! than the accepted range at the start are late whatever comes before them (the range
//! only moves forward). Of the others, the newest must not be too far ahead of the
//! watermark, and the oldest must still be accepted under the watermark the chunk ends
//! with. Then every other row is accepted,
//! the chunk's seconds all fit in the ring (distinct slots per key), and the rows can be
//! folded group by group, one group per (key, second), with the bucket's counters held in
//! locals. Anything else returns `None` without touching the aggregator, and the caller
//! falls back to [`Aggregator::observe_binned`] row by row.
//!
//! Exactness: within a group rows are folded in row order (latency sums are
//! order-sensitive floating point), and groups are taken in order of their first row, so
//! each key's old buckets are folded into its accumulator in the same order as row by
//! row. Counters, minima, maxima and sketch bins do not depend on order. The columnar
//! property test checks the result against Event-by-Event observe.

use super::{status_class, Aggregator, KeyId, BUCKET_MS, MAX_THRESHOLDS, NO_EPOCH};

/// Rows of one chunk; every slice has the same length (at most [`MAX_CHUNK_ROWS`]).
pub(crate) struct ChunkRows<'a> {
    /// Key of each row; [`SKIP_ROW`] for rows not to be observed.
    pub key: &'a [KeyId],
    pub ts_ms: &'a [i64],
    /// Success verdict in bit 0, [`status_class`] of the HTTP status in bits 1..=3
    /// ([`row_info`]).
    pub info: &'a [u8],
    /// HTTP status (at most `u16::MAX`), for the per-code counts.
    pub status: &'a [u32],
    /// Latency as `clean_latency` makes it; negative = no latency.
    pub latency: &'a [f64],
    /// `sketch::bin_of` of the latency.
    pub bin: &'a [i32],
}

/// The [`ChunkRows::info`] of a row: its success verdict and its status's class.
#[inline]
pub(crate) fn row_info(success: bool, status: u16) -> u8 {
    success as u8 | (status_class(status) as u8) << 1
}

/// Increment of the packed status-class counts for each class (the no-class sink, 5, and
/// the values no class takes shift out of the 55 bits read back).
const CLASS_INC: [u64; 8] = [1, 1 << 11, 1 << 22, 1 << 33, 1 << 44, 1 << 55, 0, 0];

/// Key of a row that is not to be observed.
pub(crate) const SKIP_ROW: KeyId = KeyId::MAX;
/// Largest chunk: status-class counts are packed in 11-bit fields.
pub(crate) const MAX_CHUNK_ROWS: usize = 2047;
/// More (key, second) groups than this in one chunk: not the fast path.
const MAX_GROUPS: usize = 64;
/// Direct-mapped (key, epoch) → group cache.
const GROUP_SLOTS: usize = 64;
const NO_GROUP: u8 = u8::MAX;
const CLASS_BITS: u32 = 11;
const CLASS_MASK: u64 = (1 << CLASS_BITS) - 1;

#[derive(Clone, Copy)]
struct Group {
    key: KeyId,
    epoch: i64,
    rows: u32,
}

/// Buffers reused from chunk to chunk.
#[derive(Default)]
pub(crate) struct ChunkScratch {
    /// Group of each row ([`NO_GROUP`]: skipped).
    group: Vec<u8>,
    /// Row indices ordered by group, row order kept within a group.
    order: Vec<u16>,
    groups: Vec<Group>,
}

impl Aggregator {
    /// Fold every row of `rows` whose key is not [`SKIP_ROW`], exactly as
    /// [`Aggregator::observe_binned`] row by row would (without flags), when the chunk is
    /// one the fast path takes (see module docs). Returns the number of rows folded and
    /// of rows refused as [`Reason::DroppedLate`](crate::malformed::Reason), or `None`
    /// (aggregator untouched) when the chunk must go row by row. Inlined into each
    /// compilation of `ingest_batch` (its time-range loop vectorises with AVX2).
    #[inline(always)]
    pub(crate) fn observe_chunk(
        &mut self,
        rows: &ChunkRows,
        scratch: &mut ChunkScratch,
    ) -> Option<(u64, u64)> {
        let n = rows.key.len();
        let lens = [
            rows.ts_ms.len(),
            rows.info.len(),
            rows.status.len(),
            rows.latency.len(),
            rows.bin.len(),
        ];
        if n > MAX_CHUNK_ROWS || lens.iter().any(|&l| l != n) {
            return None;
        }
        let wm0 = self.watermark?;
        // Time range of the rows to fold (branch-free: vectorises), late rows counted.
        let min0 = self.min_ts;
        let (mut lo, mut hi, mut late) = (i64::MAX, i64::MIN, 0u64);
        for (&k, &ts) in rows.key.iter().zip(rows.ts_ms) {
            let row = k != SKIP_ROW;
            let take = row && ts >= min0;
            late += (row && !take) as u64;
            // Plain min/max of selected values: LLVM's reduction idiom (vectorises).
            lo = lo.min(if take { ts } else { i64::MAX });
            hi = hi.max(if take { ts } else { i64::MIN });
        }
        if lo > hi {
            return Some((0, late)); // nothing to fold
        }
        if hi > self.max_ts {
            return None;
        }
        // The accepted range at the end of the chunk, with the watermark code itself.
        let saved = (self.watermark, self.min_ts, self.max_ts);
        if hi > wm0 {
            self.advance_watermark(hi);
        }
        let restore = |a: &mut Aggregator| {
            (a.watermark, a.min_ts, a.max_ts) = saved;
        };
        // Usually every row to fold is in one second: groups are then keys.
        let epoch = lo.div_euclid(BUCKET_MS);
        let grouped = if late == 0 && hi.div_euclid(BUCKET_MS) == epoch {
            self.group_rows_one_epoch(rows, epoch, scratch)
        } else {
            self.group_rows(rows, min0, scratch)
        };
        if lo < self.min_ts || !grouped {
            restore(self);
            return None;
        }
        Some((self.fold_groups(rows, scratch), late))
    }

    /// Assign the rows to fold (key set, time ≥ `min_ts`) to (key, second) groups and
    /// order them by group. False when there are too many groups, a key is not live, or a
    /// slot serves a newer second (the caller then goes row by row).
    fn group_rows(&self, rows: &ChunkRows, min_ts: i64, s: &mut ChunkScratch) -> bool {
        s.groups.clear();
        s.group.clear();
        s.group.resize(rows.key.len(), NO_GROUP);
        let mut cache = [(SKIP_ROW, NO_EPOCH, NO_GROUP); GROUP_SLOTS];
        let mut counts = [0u16; MAX_GROUPS];
        // Epoch of the previous row and its times [lo, hi): most rows share it (no
        // division). An empty range (lo > hi) where the bounds do not fit an i64.
        let (mut epoch, mut epoch_lo, mut epoch_hi) = (NO_EPOCH, 1i64, 0i64);
        for ((g, &key), &ts) in s.group.iter_mut().zip(rows.key).zip(rows.ts_ms) {
            if key == SKIP_ROW || ts < min_ts {
                continue;
            }
            if !(epoch_lo <= ts && ts < epoch_hi) {
                epoch = ts.div_euclid(BUCKET_MS);
                let lo = epoch.checked_mul(BUCKET_MS);
                (epoch_lo, epoch_hi) = lo
                    .zip(lo.and_then(|l| l.checked_add(BUCKET_MS)))
                    .unwrap_or((1, 0));
            }
            let h =
                ((key as u64).wrapping_add(epoch as u64)).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 58; // 6 bits: GROUP_SLOTS
            let Some(entry) = cache.get_mut(h as usize) else {
                return false;
            };
            let gid = if entry.0 == key && entry.1 == epoch {
                entry.2
            } else {
                let Some(gid) = self.group_of(&mut s.groups, key, epoch) else {
                    return false;
                };
                *entry = (key, epoch, gid);
                gid
            };
            *g = gid;
            if let Some(c) = counts.get_mut(gid as usize) {
                *c += 1;
            }
        }
        s.order_by_group(&counts);
        true
    }

    /// [`Aggregator::group_rows`] when every row to fold is in second `epoch` (and none
    /// is late): a row's group is its key's.
    fn group_rows_one_epoch(&self, rows: &ChunkRows, epoch: i64, s: &mut ChunkScratch) -> bool {
        s.groups.clear();
        s.group.clear();
        s.group.resize(rows.key.len(), NO_GROUP);
        let mut cache = [(SKIP_ROW, NO_GROUP); GROUP_SLOTS];
        let mut counts = [0u16; MAX_GROUPS];
        for (g, &key) in s.group.iter_mut().zip(rows.key) {
            if key == SKIP_ROW {
                continue;
            }
            let entry = &mut cache[key as usize % GROUP_SLOTS];
            let gid = if entry.0 == key {
                entry.1
            } else {
                let Some(gid) = self.group_of(&mut s.groups, key, epoch) else {
                    return false;
                };
                *entry = (key, gid);
                gid
            };
            *g = gid;
            if let Some(c) = counts.get_mut(gid as usize) {
                *c += 1;
            }
        }
        s.order_by_group(&counts);
        true
    }

    /// Id of the group of (`key`, `epoch`), added if new; `None` when there are too many
    /// groups, the key is not live, or its slot for `epoch` serves a newer second.
    #[inline(never)]
    fn group_of(&self, groups: &mut Vec<Group>, key: KeyId, epoch: i64) -> Option<u8> {
        if let Some(i) = groups.iter().position(|x| x.key == key && x.epoch == epoch) {
            return Some(i as u8);
        }
        if groups.len() >= MAX_GROUPS {
            return None;
        }
        let k = self.keys.get(key as usize)?.as_ref()?;
        let ring = self.cfg.ring_secs as i64;
        match k.ring.get(epoch.rem_euclid(ring) as usize) {
            Some(b) if b.epoch <= epoch => {}
            _ => return None,
        }
        groups.push(Group {
            key,
            epoch,
            rows: 0,
        });
        Some((groups.len() - 1) as u8)
    }
}

impl ChunkScratch {
    /// Counting sort of the row indices by group (`counts`: rows per group).
    fn order_by_group(&mut self, counts: &[u16; MAX_GROUPS]) {
        let s = self;
        for (grp, &c) in s.groups.iter_mut().zip(counts) {
            grp.rows = c as u32;
        }
        let mut next = [0u16; MAX_GROUPS];
        let mut at = 0u16;
        for (nx, &c) in next.iter_mut().zip(counts) {
            *nx = at;
            at += c;
        }
        s.order.clear();
        s.order.resize(at as usize, 0);
        for (i, &g) in s.group.iter().enumerate() {
            if let Some(nx) = next.get_mut(g as usize) {
                if let Some(o) = s.order.get_mut(*nx as usize) {
                    *o = i as u16;
                }
                *nx += 1;
            }
        }
    }
}

impl Aggregator {
    /// Fold each group into its bucket; returns the rows folded.
    fn fold_groups(&mut self, rows: &ChunkRows, s: &ChunkScratch) -> u64 {
        let ring = self.cfg.ring_secs as i64;
        let mut start = 0usize;
        let mut folded = 0u64;
        // Ring slot of each group's bucket, for the per-code counts.
        let mut slot_of = [0usize; MAX_GROUPS];
        for (grp, slot_out) in s.groups.iter().zip(&mut slot_of) {
            let idx = s.order.get(start..start + grp.rows as usize).unwrap_or(&[]);
            start += grp.rows as usize;
            let Some(Some(k)) = self.keys.get_mut(grp.key as usize) else {
                continue; // checked by group_rows
            };
            // Bucket selection as in `observe_binned`.
            let epoch = grp.epoch;
            let slot = epoch.rem_euclid(ring) as usize;
            *slot_out = slot;
            // `group_rows` checked that the slot holds no newer second.
            if !k.open_bucket(epoch, slot) {
                continue;
            }
            let Some(b) = k.ring.get_mut(slot) else {
                continue;
            };
            let n_thr = k.n_thresholds.min(MAX_THRESHOLDS);
            let thresholds = k.thresholds.get(..n_thr).unwrap_or(&[]);

            // The bucket's counters in locals, in two passes over the group's rows (fewer
            // live values: no spills). Counts first.
            let mut successes = 0u32;
            let mut classes = 0u64; // 11-bit count per status class 0..=4
            let mut max_ts = i64::MIN;
            for &i in idx {
                let i = i as usize;
                let (Some(&info), Some(&ts)) = (rows.info.get(i), rows.ts_ms.get(i)) else {
                    continue;
                };
                max_ts = max_ts.max(ts);
                successes += (info & 1) as u32;
                classes = classes.wrapping_add(CLASS_INC[(info >> 1) as usize & 7]);
            }
            // Latencies: sum in row order.
            let mut sum = b.lat_sum;
            let (mut min, mut max) = (b.lat_min, b.lat_max);
            let mut exceed = b.exceed;
            let mut with_latency = 0u64;
            for &i in idx {
                let i = i as usize;
                let (Some(&l), Some(&bin)) = (rows.latency.get(i), rows.bin.get(i)) else {
                    continue;
                };
                if l >= 0.0 {
                    with_latency += 1;
                    b.sketch.insert_bin_uncounted(bin);
                    sum += l;
                    // Plain comparisons, as `Bucket::record` (l is never NaN).
                    if l < min {
                        min = l;
                    }
                    if l > max {
                        max = l;
                    }
                    for (c, t) in exceed.iter_mut().zip(thresholds) {
                        *c = c.wrapping_add((l > *t) as u32);
                    }
                }
            }
            b.sketch.add_to_count(with_latency);
            let n = idx.len() as u32;
            b.requests = b.requests.wrapping_add(n);
            b.successes = b.successes.wrapping_add(successes);
            let mut classed = 0u32;
            for (j, c) in b.status.iter_mut().take(5).enumerate() {
                let add = ((classes >> (j as u32 * CLASS_BITS)) & CLASS_MASK) as u32;
                classed += add;
                *c = c.wrapping_add(add);
            }
            if let Some(sink) = b.status.get_mut(5) {
                *sink = sink.wrapping_add(n - classed);
            }
            b.lat_sum = sum;
            b.lat_min = min;
            b.lat_max = max;
            b.exceed = exceed;
            k.last_event_ms = k.last_event_ms.max(max_ts);
            folded += n as u64;
        }
        self.count_codes(rows, s, &slot_of);
        folded
    }

    /// Per-code counts of the folded rows whose status is not 200. Those are few: a
    /// bit mask of the non-200 rows is built 32 rows at a time (compares that vectorise),
    /// and only its set bits are looked at. Rows reach each bucket in row order, as row by
    /// row (which codes overflow depends on the order).
    fn count_codes(&mut self, rows: &ChunkRows, s: &ChunkScratch, slot_of: &[usize; MAX_GROUPS]) {
        const BLOCK: usize = 32;
        for (bi, block) in rows.status.chunks(BLOCK).enumerate() {
            let mask = match <&[u32; BLOCK]>::try_from(block) {
                Ok(full) => non_200_mask(full),
                Err(_) => block
                    .iter()
                    .enumerate()
                    .fold(0, |m, (j, &st)| m | ((st != 200) as u32) << j),
            };
            let mut mask = mask;
            while mask != 0 {
                let i = bi * BLOCK + mask.trailing_zeros() as usize;
                mask &= mask - 1;
                let g = s.group.get(i).map_or(NO_GROUP, |g| *g) as usize;
                let (Some(grp), Some(&slot), Some(&st)) =
                    (s.groups.get(g), slot_of.get(g), rows.status.get(i))
                else {
                    continue; // a row not folded
                };
                if let Some(Some(k)) = self.keys.get_mut(grp.key as usize) {
                    if let Some(b) = k.ring.get_mut(slot) {
                        b.count_code(st as u16, 1);
                    }
                }
            }
        }
    }
}

/// Bit j set when `block[j]` is not 200 (fixed length: the compares vectorise).
#[inline(always)]
fn non_200_mask(block: &[u32; 32]) -> u32 {
    let mut m = 0u32;
    for (j, &st) in block.iter().enumerate() {
        m |= ((st != 200) as u32) << j;
    }
    m
}
