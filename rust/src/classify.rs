//! Success classification: which requests count as successes.
//!
//! Default (documented in README): a request fails when its HTTP status is 5xx, when no
//! response was sent (status 0: the downstream disconnected or the proxy reset the stream
//! before answering; a request nobody answered is not a success), or when its gRPC status
//! is a server-side error (UNKNOWN 2, DEADLINE_EXCEEDED 4, UNIMPLEMENTED 12, INTERNAL 13,
//! UNAVAILABLE 14, DATA_LOSS 15) — the gRPC analogue of 5xx. 4xx and client-side gRPC
//! codes are successes, as in Flagger's `request-success-rate`.

/// A set of HTTP status codes 0..=999 as a bitmap.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusSet([u64; 16]);

impl StatusSet {
    pub fn empty() -> Self {
        StatusSet([0; 16])
    }
    /// Add the inclusive range `lo..=hi` (clamped to 0..=999).
    pub fn with_range(mut self, lo: u16, hi: u16) -> Self {
        for s in lo..=hi.min(999) {
            self.insert(s);
        }
        self
    }
    pub fn insert(&mut self, s: u16) {
        if s < 1000 {
            self.0[(s / 64) as usize] |= 1 << (s % 64);
        }
    }
    #[inline]
    pub fn contains(&self, s: u16) -> bool {
        s < 1000 && self.0[(s / 64) as usize] & (1 << (s % 64)) != 0
    }
}

/// Decides success or failure of one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Classifier {
    /// HTTP statuses that count as failures (default 500..=599 and 0).
    pub failure_status: StatusSet,
    /// gRPC status codes (0..=16) that count as failures, as a bit mask.
    pub grpc_failure_mask: u32,
}

/// gRPC codes that mean the server failed (default failure set).
pub const DEFAULT_GRPC_FAILURES: [u16; 6] = [2, 4, 12, 13, 14, 15];

impl Default for Classifier {
    fn default() -> Self {
        let mut failure_status = StatusSet::empty().with_range(500, 599);
        failure_status.insert(0);
        let grpc_failure_mask = DEFAULT_GRPC_FAILURES.iter().fold(0u32, |m, c| m | 1 << c);
        Classifier {
            failure_status,
            grpc_failure_mask,
        }
    }
}

impl Classifier {
    /// Flagger-compatible: only 5xx fail; status 0 and gRPC status are ignored.
    pub fn flagger() -> Self {
        Classifier {
            failure_status: StatusSet::empty().with_range(500, 599),
            grpc_failure_mask: 0,
        }
    }

    #[inline]
    pub fn is_success(&self, status: u16, grpc_status: Option<u16>) -> bool {
        if self.failure_status.contains(status) {
            return false;
        }
        match grpc_status {
            Some(g) if g < 32 => self.grpc_failure_mask & (1 << g) == 0,
            _ => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_policy() {
        let c = Classifier::default();
        assert!(c.is_success(200, None));
        assert!(c.is_success(404, None));
        assert!(!c.is_success(503, None));
        assert!(!c.is_success(0, None));
        assert!(!c.is_success(200, Some(14)));
        assert!(c.is_success(200, Some(5)));
        assert!(c.is_success(200, Some(0)));
        let f = Classifier::flagger();
        assert!(f.is_success(0, None));
        assert!(f.is_success(200, Some(14)));
        assert!(!f.is_success(500, None));
    }
}
