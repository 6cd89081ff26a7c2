//! Container-runtime wrappers around log lines: CRI (`<time> stdout F <line>`) and
//! Docker json-file (`{"log":"<line>\n","stream":"stdout","time":"..."}`). (stub)

/// How lines are wrapped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wrapping {
    /// Decide per line: CRI prefix or Docker JSON envelope when present, else raw.
    Auto,
    /// Lines are the access log itself.
    None,
}

/// The access-log payload of `line`: `Ok(payload)` borrowed from the line, or
/// `Err(())` when the envelope needs unescaping, in which case [`unwrap_docker_into`] decodes it.
pub fn unwrap_cri(line: &str) -> &str {
    line
}

/// Decode a Docker json-file envelope's `log` value into `out`. Returns false if `line`
/// is not such an envelope.
pub fn unwrap_docker_into(_line: &str, _out: &mut String) -> bool {
    false
}
