//! Automatic format detection from a sample of lines. (stub: being implemented)

use super::Format;

/// Guess the format of `sample` (the first few KiB of a stream; may end mid-line).
/// `None` when no format matches.
pub fn detect(_sample: &[u8]) -> Option<Format> {
    None
}
