//! Exact counts per HTTP status code.
//!
//! A bucket counts every status other than 200 in a small fixed table allocated on its
//! first non-200 request; 200 (by far the most common) costs one comparison per request
//! and is derived when a snapshot is taken: the bucket's 2xx class count minus the other
//! 2xx codes. Requests whose code finds no free slot (more than [`CODE_SLOTS`] distinct
//! non-200 codes in one second of one key) count as overflow; the overflowed 2xx ones are
//! counted apart so that 200 stays exact.

/// Distinct non-200 codes a bucket counts exactly.
pub const CODE_SLOTS: usize = 14;
/// Distinct non-200 codes a window or cumulative total counts exactly (bounds a key's
/// memory whatever codes the input carries).
pub const TOTAL_CODE_SLOTS: usize = 128;

#[inline]
fn is_2xx(code: u16) -> bool {
    (200..300).contains(&code)
}

/// Non-200 counts of one bucket: parallel arrays, codes in order of first appearance.
#[derive(Debug, Clone, Default)]
pub(super) struct BucketCodes {
    codes: [u16; CODE_SLOTS],
    counts: [u32; CODE_SLOTS],
    len: u32,
    /// Requests whose code found no free slot.
    overflow: u32,
    /// The 2xx ones among `overflow`.
    overflow_2xx: u32,
}

impl BucketCodes {
    /// Forget every count, keeping the allocation.
    pub(super) fn clear(&mut self) {
        self.len = 0;
        self.overflow = 0;
        self.overflow_2xx = 0;
    }

    /// Count `n` requests of `code` (never 200). Wrapping, like the bucket's counters.
    pub(super) fn add(&mut self, code: u16, n: u32) {
        let len = (self.len as usize).min(CODE_SLOTS);
        let codes = self.codes.get(..len).unwrap_or(&[]);
        if let Some(i) = codes.iter().position(|&c| c == code) {
            if let Some(c) = self.counts.get_mut(i) {
                *c = c.wrapping_add(n);
            }
        } else if let (Some(c), Some(k)) = (self.codes.get_mut(len), self.counts.get_mut(len)) {
            *c = code;
            *k = n;
            self.len += 1;
        } else {
            self.overflow = self.overflow.wrapping_add(n);
            if is_2xx(code) {
                self.overflow_2xx = self.overflow_2xx.wrapping_add(n);
            }
        }
    }

    /// (code, count) pairs in order of first appearance.
    fn iter(&self) -> impl Iterator<Item = (u16, u32)> + '_ {
        let len = (self.len as usize).min(CODE_SLOTS);
        self.codes.iter().copied().zip(self.counts).take(len)
    }
}

/// Non-200 counts summed over buckets: sorted by code, at most [`TOTAL_CODE_SLOTS`].
#[derive(Debug, Clone, Default)]
pub(super) struct TotalCodes {
    counts: Vec<(u16, u64)>,
    overflow: u64,
    overflow_2xx: u64,
}

impl TotalCodes {
    fn add(&mut self, code: u16, n: u64) {
        match self.counts.binary_search_by_key(&code, |e| e.0) {
            Ok(i) => {
                if let Some(e) = self.counts.get_mut(i) {
                    e.1 += n;
                }
            }
            Err(i) if self.counts.len() < TOTAL_CODE_SLOTS => self.counts.insert(i, (code, n)),
            Err(_) => {
                self.overflow += n;
                if is_2xx(code) {
                    self.overflow_2xx += n;
                }
            }
        }
    }

    pub(super) fn add_bucket(&mut self, b: &BucketCodes) {
        for (code, n) in b.iter() {
            self.add(code, n as u64);
        }
        self.overflow += b.overflow as u64;
        self.overflow_2xx += b.overflow_2xx as u64;
    }

    pub(super) fn add_totals(&mut self, t: &TotalCodes) {
        for &(code, n) in &t.counts {
            self.add(code, n);
        }
        self.overflow += t.overflow;
        self.overflow_2xx += t.overflow_2xx;
    }

    /// Requests whose code was not counted.
    pub(super) fn overflow(&self) -> u64 {
        self.overflow
    }

    /// Every code with its count, sorted by code, 200 derived from `status_2xx` (the
    /// window's 2xx class count) and listed when above zero.
    pub(super) fn with_200(&self, status_2xx: u64) -> Vec<(u16, u64)> {
        let other_2xx: u64 = self
            .counts
            .iter()
            .filter(|e| is_2xx(e.0))
            .map(|e| e.1)
            .sum::<u64>()
            + self.overflow_2xx;
        let n200 = status_2xx.saturating_sub(other_2xx);
        let mut out = Vec::with_capacity(self.counts.len() + 1);
        let at = self.counts.partition_point(|e| e.0 < 200);
        out.extend_from_slice(self.counts.get(..at).unwrap_or(&[]));
        if n200 > 0 {
            out.push((200, n200));
        }
        out.extend_from_slice(self.counts.get(at..).unwrap_or(&[]));
        out
    }

    /// Heap bytes held.
    pub(super) fn memory_bytes(&self) -> usize {
        self.counts.capacity() * std::mem::size_of::<(u16, u64)>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_counts_and_overflow() {
        let mut b = BucketCodes::default();
        for code in 300..300 + CODE_SLOTS as u16 {
            b.add(code, 2);
        }
        b.add(300, 1);
        b.add(204, 5); // no slot left: overflow, and a 2xx one
        b.add(503, 1);
        let got: Vec<_> = b.iter().collect();
        assert_eq!(got.len(), CODE_SLOTS);
        assert_eq!(got[0], (300, 3));
        assert_eq!(got[13], (313, 2));
        assert_eq!((b.overflow, b.overflow_2xx), (6, 5));
        let mut t = TotalCodes::default();
        t.add_bucket(&b);
        // 2xx class: 10 × 200 + 5 × 204 (overflowed): 200 stays exact.
        let all = t.with_200(15);
        assert_eq!(all.first(), Some(&(200, 10)));
        assert_eq!(all.get(1), Some(&(300, 3)));
        assert_eq!(t.overflow(), 6);
        b.clear();
        assert_eq!(b.iter().count(), 0);
        b.add(404, 1);
        assert_eq!(b.iter().collect::<Vec<_>>(), vec![(404, 1)]);
        assert_eq!(b.overflow, 0);
    }

    #[test]
    fn totals_are_sorted_and_bounded() {
        let mut t = TotalCodes::default();
        for code in (0..1000u16).rev() {
            if code != 200 {
                t.add(code, 1);
            }
        }
        assert_eq!(t.counts.len(), TOTAL_CODE_SLOTS);
        assert!(t.counts.windows(2).all(|w| w[0].0 < w[1].0));
        assert_eq!(t.overflow(), 999 - TOTAL_CODE_SLOTS as u64);
        // The newest 128 codes (999 down to 872) took the slots; 201..=299 overflowed.
        assert_eq!(t.counts.first().map(|e| e.0), Some(872));
        assert_eq!(t.overflow_2xx, 99);
        assert_eq!(t.with_200(100).first(), Some(&(200, 1)));
        let mut u = TotalCodes::default();
        u.add_totals(&t);
        assert_eq!(u.counts, t.counts);
        assert_eq!(u.with_200(0), t.counts); // no 200 when the class count is used up
    }
}
