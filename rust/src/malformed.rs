//! Why a line was not aggregated. Every skipped line is counted under exactly one reason.

/// A reason a line was rejected (malformed) or deliberately skipped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Reason {
    // --- malformed input ---
    /// The line is not valid UTF-8.
    NotUtf8 = 0,
    /// The line ends before the format is complete (e.g. a JSON object without `}`).
    Truncated,
    /// A field the format requires is absent.
    MissingField,
    /// A numeric field does not parse (status, duration, bytes).
    BadNumber,
    /// The timestamp does not parse.
    BadTimestamp,
    /// The line is longer than the configured limit.
    LineTooLong,
    /// No attribution rule could tell which version served the request.
    UnattributableVersion,
    /// The line is not valid JSON / does not have the format's structure.
    BadSyntax,
    /// A field needed for attribution holds a JSON escape sequence we do not decode.
    UnsupportedEscape,
    /// The key limit is reached and no idle key could be evicted.
    KeyLimit,
    /// The event time is older than the watermark minus the allowed lateness.
    DroppedLate,
    /// The event time is too far ahead of the watermark to be trusted.
    FutureTimestamp,
    /// A protobuf message or entry that does not decode (Envoy gRPC access-log service).
    BadProtobuf,
    // --- skipped on purpose (not malformed) ---
    /// Empty or whitespace-only line.
    Blank,
    /// A TCP (non-HTTP) entry: method `-` in Envoy's TEXT format, `tcp_logs` in ALS.
    NotHttp,
    /// An ALS entry flushed periodically during a long stream (`intermediate_log_entry`):
    /// the final entry of the stream is the one counted.
    IntermediateEntry,
}

impl Reason {
    pub const ALL: [Reason; 16] = [
        Reason::NotUtf8,
        Reason::Truncated,
        Reason::MissingField,
        Reason::BadNumber,
        Reason::BadTimestamp,
        Reason::LineTooLong,
        Reason::UnattributableVersion,
        Reason::BadSyntax,
        Reason::UnsupportedEscape,
        Reason::KeyLimit,
        Reason::DroppedLate,
        Reason::FutureTimestamp,
        Reason::BadProtobuf,
        Reason::Blank,
        Reason::NotHttp,
        Reason::IntermediateEntry,
    ];
    pub const COUNT: usize = Reason::ALL.len();

    /// Stable snake_case name used in counters, JSON and metrics.
    pub fn name(self) -> &'static str {
        match self {
            Reason::NotUtf8 => "not_utf8",
            Reason::Truncated => "truncated",
            Reason::MissingField => "missing_field",
            Reason::BadNumber => "bad_number",
            Reason::BadTimestamp => "bad_timestamp",
            Reason::LineTooLong => "line_too_long",
            Reason::UnattributableVersion => "unattributable_version",
            Reason::BadSyntax => "bad_syntax",
            Reason::UnsupportedEscape => "unsupported_escape",
            Reason::KeyLimit => "key_limit",
            Reason::DroppedLate => "dropped_late",
            Reason::FutureTimestamp => "future_timestamp",
            Reason::BadProtobuf => "bad_protobuf",
            Reason::Blank => "blank",
            Reason::NotHttp => "not_http",
            Reason::IntermediateEntry => "intermediate_entry",
        }
    }

    /// Malformed input (as opposed to a line skipped on purpose or dropped by policy).
    pub fn is_malformed(self) -> bool {
        !matches!(
            self,
            Reason::Blank
                | Reason::NotHttp
                | Reason::IntermediateEntry
                | Reason::DroppedLate
                | Reason::KeyLimit
        )
    }
}

/// One counter per reason.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReasonCounts(pub [u64; Reason::COUNT]);

impl ReasonCounts {
    #[inline]
    pub fn add(&mut self, r: Reason) {
        self.0[r as usize] += 1;
    }
    pub fn get(&self, r: Reason) -> u64 {
        self.0[r as usize]
    }
    pub fn merge(&mut self, other: &ReasonCounts) {
        for (a, b) in self.0.iter_mut().zip(other.0.iter()) {
            *a += b;
        }
    }
    /// Non-zero counters as (name, count).
    pub fn nonzero(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        Reason::ALL
            .iter()
            .filter(|r| self.0[**r as usize] > 0)
            .map(|r| (r.name(), self.0[*r as usize]))
    }
    pub fn malformed_total(&self) -> u64 {
        Reason::ALL
            .iter()
            .filter(|r| r.is_malformed())
            .map(|r| self.0[*r as usize])
            .sum()
    }
}
