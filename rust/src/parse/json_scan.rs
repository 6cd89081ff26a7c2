//! A fast, allocation-free scanner over one flat JSON object (the shape of every JSON
//! access-log line).
//!
//! [`ObjectScanner`] walks `{ "key": value, ... }` member by member and hands out each
//! [`Member`] (key, value kind, raw value bytes); the caller picks the few keys it needs
//! and ignores the rest. [`scan_object`] is the same walk with a callback. Nothing is
//! decoded or copied: strings come back as the raw bytes between their quotes plus a
//! flag telling whether they held an escape; [`str_of`] turns a raw slice back into a
//! `&str` of the line.
//!
//! Speed: a JSON access-log line is mostly short keys and short strings (~100 quotes in
//! 800 bytes), so one search call per string (even SIMD memchr2) costs more than the
//! search itself. Instead, bitmaps of the `"` and `\` bytes of each 64-byte block are
//! computed once, with SSE2, when the walk reaches the block (the crate's one `unsafe`,
//! see [`mask64`]); a string end is then a shift and a `trailing_zeros`, and a block
//! without backslashes needs no escape handling at all.
//!
//! What is checked: the object structure, string escapes (`\"`, `\\`, `\/`, `\b`, `\f`,
//! `\n`, `\r`, `\t`, `\uXXXX`), the JSON number grammar and the literals. What is not:
//! raw control characters inside strings are accepted, and nested objects/arrays in
//! values are only skipped (brackets matched by kind, strings respected, nesting at most
//! [`MAX_DEPTH`]), not validated inside.
//!
//! Keys are raw too: a key holding an escape is reported with `key_escaped = true` and
//! its raw bytes; the parsers in this crate never match such a key against a wanted
//! name (documented limitation: `"st\u0061tus"` is not `"status"`).

pub mod shape;

use std::cell::Cell;

/// Deepest nesting of objects/arrays inside a member value that is skipped.
pub const MAX_DEPTH: usize = 64;

/// Why a line is not one well-formed JSON object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScanError {
    /// The input ends before the object closes (no `}`, unterminated string, cut number).
    Truncated,
    /// Anything else malformed (wrong byte, bad escape, trailing junk, too deep).
    BadSyntax,
}

impl From<ScanError> for crate::malformed::Reason {
    fn from(e: ScanError) -> Self {
        match e {
            ScanError::Truncated => crate::malformed::Reason::Truncated,
            ScanError::BadSyntax => crate::malformed::Reason::BadSyntax,
        }
    }
}

/// One member value, borrowed from the line.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Value<'a> {
    /// A string: the raw bytes between the quotes (escapes not decoded) and whether it
    /// contains any `\` escape.
    Str { raw: &'a [u8], escaped: bool },
    /// A number, as written (grammar checked).
    Num(&'a [u8]),
    /// `true` / `false`.
    Bool(bool),
    /// `null`.
    Null,
    /// A nested object or array, raw bytes including its brackets (skipped, not validated).
    Nested(&'a [u8]),
}

/// One `"key": value` member of the object.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Member<'a> {
    /// Raw key bytes between the quotes.
    pub key: &'a [u8],
    /// The key holds an escape (its raw bytes are not its decoded name).
    pub key_escaped: bool,
    pub value: Value<'a>,
}

/// `raw`, a slice the scanner handed out from `line`, as a `&str` of the line. Scanner
/// slices always start and end next to ASCII delimiters, so they are char boundaries;
/// a slice from elsewhere gives "".
#[inline]
pub fn str_of<'a>(line: &'a str, raw: &[u8]) -> &'a str {
    let start = (raw.as_ptr() as usize).wrapping_sub(line.as_ptr() as usize);
    line.get(start..start.wrapping_add(raw.len())).unwrap_or("")
}

/// `key == name`, compiled to a few word compares (no `memcmp` call) since `N` is known.
#[inline(always)]
pub fn key_is<const N: usize>(key: &[u8], name: &[u8; N]) -> bool {
    <&[u8; N]>::try_from(key).is_ok_and(|k| k == name)
}

/// Walk the single JSON object in `line`, calling `on_member` for every member in order.
/// A callback error stops the walk and is returned as is. See [`ObjectScanner`].
#[inline]
pub fn scan_object<'a, E, F>(line: &'a [u8], mut on_member: F) -> Result<(), E>
where
    E: From<ScanError>,
    F: FnMut(Member<'a>) -> Result<(), E>,
{
    let mut scanner = ObjectScanner::new(line);
    while let Some(m) = scanner.next_member()? {
        on_member(m)?;
    }
    Ok(())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Before the opening `{`.
    Start,
    /// After `{`: a member or `}` comes next.
    First,
    /// After a member: `,` or `}` comes next.
    Next,
    /// After the closing `}` (and the check that only whitespace follows).
    Done,
}

/// Pull-style walk over the members of one JSON object.
///
/// Leading and trailing whitespace is allowed; anything else after the closing `}` is
/// [`ScanError::BadSyntax`]. Call [`next_member`](Self::next_member) until it returns
/// `Ok(None)`: only then has the whole object been checked (a cut line is always
/// [`ScanError::Truncated`], whatever the caller already saw).
pub struct ObjectScanner<'a> {
    s: &'a [u8],
    pos: usize,
    state: State,
    specials: Specials<'a>,
}

impl<'a> ObjectScanner<'a> {
    /// A scanner over `line` (one JSON object, optionally surrounded by whitespace).
    #[inline]
    pub fn new(line: &'a [u8]) -> Self {
        ObjectScanner {
            s: line,
            pos: 0,
            state: State::Start,
            specials: Specials::new(line),
        }
    }

    /// The next member, `Ok(None)` after the closing `}`, or why the object is malformed.
    #[inline(always)]
    pub fn next_member(&mut self) -> Result<Option<Member<'a>>, ScanError> {
        let s = self.s;
        let mut i = self.pos;
        // Compact JSON (what Envoy and Linkerd write) takes the fast paths: `,"` between
        // members, `":"` between a key and a string value.
        if self.state == State::Next && s.get(i..i + 2) == Some(b",\"") {
            i += 1;
        } else {
            match self.advance_to_key(i)? {
                Some(k) => i = k,
                None => return Ok(None),
            }
        }
        // Key: `s[i]` is its opening quote.
        let key_start = i + 1;
        let (key_end, key_escaped) = self.specials.string_end(key_start)?;
        let key = s.get(key_start..key_end).ok_or(ScanError::BadSyntax)?;
        let (value, next) = if s.get(key_end + 1..key_end + 3) == Some(b":\"") {
            let start = key_end + 3;
            let (end, escaped) = self.specials.string_end(start)?;
            let raw = s.get(start..end).ok_or(ScanError::BadSyntax)?;
            (Value::Str { raw, escaped }, end + 1)
        } else {
            i = skip_ws(s, key_end + 1);
            match s.get(i) {
                Some(b':') => {}
                Some(_) => return Err(ScanError::BadSyntax),
                None => return Err(ScanError::Truncated),
            }
            self.value_at(skip_ws(s, i + 1))?
        };
        self.pos = next;
        self.state = State::Next;
        Ok(Some(Member {
            key,
            key_escaped,
            value,
        }))
    }

    /// The general way to the next key from `i`: the opening `{` or a `,`, whitespace;
    /// `Ok(Some(index of the key's quote))`, or `Ok(None)` after the closing `}`.
    #[inline(never)]
    fn advance_to_key(&mut self, mut i: usize) -> Result<Option<usize>, ScanError> {
        let s = self.s;
        match self.state {
            State::Next => {
                i = skip_ws(s, i);
                match s.get(i) {
                    Some(b',') => i = skip_ws(s, i + 1),
                    Some(b'}') => return self.finish(i + 1),
                    Some(_) => return Err(ScanError::BadSyntax),
                    None => return Err(ScanError::Truncated),
                }
            }
            State::First => {}
            State::Start => {
                i = skip_ws(s, i);
                match s.get(i) {
                    Some(b'{') => i = skip_ws(s, i + 1),
                    Some(_) => return Err(ScanError::BadSyntax),
                    None => return Err(ScanError::Truncated),
                }
                if s.get(i) == Some(&b'}') {
                    return self.finish(i + 1);
                }
                self.state = State::First;
            }
            State::Done => return Ok(None),
        }
        match s.get(i) {
            Some(b'"') => Ok(Some(i)),
            Some(_) => Err(ScanError::BadSyntax),
            None => Err(ScanError::Truncated),
        }
    }

    /// After the closing `}`: only whitespace may follow.
    #[inline]
    fn finish(&mut self, i: usize) -> Result<Option<usize>, ScanError> {
        if skip_ws(self.s, i) == self.s.len() {
            self.state = State::Done;
            Ok(None)
        } else {
            Err(ScanError::BadSyntax)
        }
    }

    /// Scan one value starting at `i` (not whitespace). Returns it and the index after it.
    #[inline(always)]
    fn value_at(&mut self, i: usize) -> Result<(Value<'a>, usize), ScanError> {
        let s = self.s;
        match s.get(i) {
            Some(b'"') => {
                let (end, escaped) = self.specials.string_end(i + 1)?;
                let raw = s.get(i + 1..end).ok_or(ScanError::BadSyntax)?;
                Ok((Value::Str { raw, escaped }, end + 1))
            }
            Some(b'-' | b'0'..=b'9') => {
                let end = scan_number(s, i)?;
                let raw = s.get(i..end).ok_or(ScanError::BadSyntax)?;
                Ok((Value::Num(raw), end))
            }
            Some(b'n') if s.get(i..i + 4) == Some(b"null") => Ok((Value::Null, i + 4)),
            Some(b'n') => literal(s, i, b"null").map(|e| (Value::Null, e)),
            Some(b't') => literal(s, i, b"true").map(|e| (Value::Bool(true), e)),
            Some(b'f') => literal(s, i, b"false").map(|e| (Value::Bool(false), e)),
            Some(b'{' | b'[') => {
                let end = skip_nested(&mut self.specials, i)?;
                let raw = s.get(i..end).ok_or(ScanError::BadSyntax)?;
                Ok((Value::Nested(raw), end))
            }
            Some(_) => Err(ScanError::BadSyntax),
            None => Err(ScanError::Truncated),
        }
    }
}

#[inline(always)]
fn is_ws(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r')
}

/// Index of the first non-whitespace byte at or after `i` (or `s.len()`).
#[inline(always)]
fn skip_ws(s: &[u8], mut i: usize) -> usize {
    while let Some(&b) = s.get(i) {
        if !is_ws(b) {
            break;
        }
        i += 1;
    }
    i
}

/// Match the literal `word` at `i`; a cut-off prefix of it at the end is Truncated.
#[inline]
fn literal(s: &[u8], i: usize, word: &[u8]) -> Result<usize, ScanError> {
    let end = i + word.len();
    match s.get(i..end) {
        Some(w) if w == word => Ok(end),
        Some(_) => Err(ScanError::BadSyntax),
        None => {
            let rest = s.get(i..).unwrap_or(&[]);
            if word.starts_with(rest) {
                Err(ScanError::Truncated)
            } else {
                Err(ScanError::BadSyntax)
            }
        }
    }
}

/// Check a JSON number `-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?` at `i`; returns
/// the index after it. Ending the input inside the grammar is Truncated.
#[inline(always)]
fn scan_number(s: &[u8], mut i: usize) -> Result<usize, ScanError> {
    if s.get(i) == Some(&b'-') {
        i += 1;
    }
    // Integer part.
    match s.get(i) {
        Some(b'0') => i += 1,
        Some(b'1'..=b'9') => i = digits(s, i + 1),
        Some(_) => return Err(ScanError::BadSyntax),
        None => return Err(ScanError::Truncated),
    }
    match s.get(i) {
        Some(b'.' | b'e' | b'E') => number_tail(s, i),
        _ => Ok(i),
    }
}

/// Fraction and exponent of a number (rare in access logs).
#[inline(never)]
fn number_tail(s: &[u8], mut i: usize) -> Result<usize, ScanError> {
    if s.get(i) == Some(&b'.') {
        i = required_digits(s, i + 1)?;
    }
    if let Some(b'e' | b'E') = s.get(i) {
        i += 1;
        if let Some(b'+' | b'-') = s.get(i) {
            i += 1;
        }
        i = required_digits(s, i)?;
    }
    Ok(i)
}

#[inline(always)]
fn digits(s: &[u8], mut i: usize) -> usize {
    while let Some(b'0'..=b'9') = s.get(i) {
        i += 1;
    }
    i
}

#[inline]
fn required_digits(s: &[u8], i: usize) -> Result<usize, ScanError> {
    match s.get(i) {
        Some(b'0'..=b'9') => Ok(digits(s, i + 1)),
        Some(_) => Err(ScanError::BadSyntax),
        None => Err(ScanError::Truncated),
    }
}

/// Blocks of 64 bytes whose bitmaps are computed in one go (1 KiB: most access-log
/// lines fit in one window).
const WINDOW_BLOCKS: usize = 16;

/// Locates `"` and `\` bytes through bitmaps of the 64-byte blocks of a window of the
/// line, computed all at once (independent SSE2 work, no per-string calls).
struct Specials<'a> {
    s: &'a [u8],
    /// Start of the window (a multiple of 64).
    start: usize,
    /// Bit j of `quotes[k]` is set when `s[start + 64 k + j]` is `"`.
    quotes: [u64; WINDOW_BLOCKS],
    /// Same for `\`.
    backslashes: [u64; WINDOW_BLOCKS],
    /// No backslash anywhere in the window: every quote ends a string.
    plain: bool,
}

impl<'a> Specials<'a> {
    #[inline(always)]
    fn new(s: &'a [u8]) -> Self {
        let mut sp = Specials {
            s,
            start: 0,
            quotes: [0; WINDOW_BLOCKS],
            backslashes: [0; WINDOW_BLOCKS],
            plain: true,
        };
        sp.fill(0);
        sp
    }

    /// Compute the bitmaps of the window starting at `start`.
    #[inline(never)]
    fn fill(&mut self, start: usize) {
        self.start = start;
        let rest = self.s.get(start..).unwrap_or(&[]);
        let window = rest.get(..64 * WINDOW_BLOCKS).unwrap_or(rest);
        Self::fill_masks(&mut self.quotes, window, b'"');
        // Backslashes are rare: one memchr over the window says whether their bitmaps
        // are needed at all.
        self.plain = memchr::memchr(b'\\', window).is_none();
        if self.plain {
            self.backslashes = [0; WINDOW_BLOCKS];
        } else {
            Self::fill_masks(&mut self.backslashes, window, b'\\');
        }
    }

    /// Bitmaps of `byte` for the blocks of `window` (at most `WINDOW_BLOCKS` blocks).
    #[inline(always)]
    fn fill_masks(masks: &mut [u64; WINDOW_BLOCKS], window: &[u8], byte: u8) {
        *masks = [0; WINDOW_BLOCKS];
        let mut blocks = window.chunks_exact(64);
        let mut filled = 0;
        for (m, block) in masks.iter_mut().zip(&mut blocks) {
            if let Ok(block) = <&[u8; 64]>::try_from(block) {
                *m = eq_mask64(block, byte);
            }
            filled += 1;
        }
        let tail = blocks.remainder();
        if !tail.is_empty() {
            if let Some(m) = masks.get_mut(filled) {
                *m = tail_mask(window, tail.len(), byte);
            }
        }
    }

    /// Closing quote of the string whose body starts at `from`, and whether the body
    /// held an escape. Fast path: no backslash in the window and the end is in the
    /// same or the next block.
    #[inline(always)]
    fn string_end(&mut self, from: usize) -> Result<(usize, bool), ScanError> {
        let rel = from.wrapping_sub(self.start);
        let k = rel / 64;
        if self.plain && k + 1 < WINDOW_BLOCKS {
            let q = self.quotes[k] >> (rel % 64);
            if q != 0 {
                return Ok((from + q.trailing_zeros() as usize, false));
            }
            let q = self.quotes[k + 1];
            if q != 0 {
                return Ok((
                    self.start + 64 * (k + 1) + q.trailing_zeros() as usize,
                    false,
                ));
            }
        }
        self.string_end_slow(from)
    }

    /// The general case: escapes, long strings, the end of the window.
    #[inline(never)]
    fn string_end_slow(&mut self, mut from: usize) -> Result<(usize, bool), ScanError> {
        let mut escaped = false;
        loop {
            let rel = from.wrapping_sub(self.start);
            let k = rel / 64;
            let (Some(&quotes), Some(&backslashes)) = (self.quotes.get(k), self.backslashes.get(k))
            else {
                // Past the window (or before it): move the window.
                if from >= self.s.len() {
                    return Err(ScanError::Truncated);
                }
                self.fill(from & !63);
                continue;
            };
            let q = quotes >> (rel % 64);
            let any = q | (backslashes >> (rel % 64));
            if any == 0 {
                from = self.start + 64 * (k + 1);
                continue;
            }
            let j = any.trailing_zeros();
            let p = from + j as usize;
            if (q >> j) & 1 == 1 {
                return Ok((p, escaped));
            }
            escaped = true;
            from = skip_escape(self.s, p)?;
        }
    }
}

/// Bitmap of `byte` in the last `n` (< 64) bytes of `s`: take the 64 bytes that end `s`
/// and shift out the part before the tail (no copy); only inputs shorter than 64 bytes
/// need padding.
#[inline(never)]
fn tail_mask(s: &[u8], n: usize, byte: u8) -> u64 {
    if let Some(block) = s
        .len()
        .checked_sub(64)
        .and_then(|w| s.get(w..))
        .and_then(|b| <&[u8; 64]>::try_from(b).ok())
    {
        return eq_mask64(block, byte) >> (64 - n.clamp(1, 64));
    }
    let mut padded = [0u8; 64];
    let tail = s.get(s.len().saturating_sub(n)..).unwrap_or(&[]);
    if let Some(dst) = padded.get_mut(..tail.len()) {
        dst.copy_from_slice(tail);
    }
    // Padding zeros match nothing we look for (`"` or `\`).
    eq_mask64(&padded, byte)
}

/// Bit k set when `block[k] == byte`.
#[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
#[inline(always)]
fn eq_mask64(block: &[u8; 64], byte: u8) -> u64 {
    // SAFETY: `eq_mask64_sse2` only requires SSE2, which this cfg guarantees is enabled
    // at compile time (it is part of the x86_64 baseline); it takes no pointers. Without
    // the intrinsics, LLVM does not turn a byte-compare loop into pmovmskb (checked in
    // the asm), and the per-string memchr2 scanner this replaced was ~2x slower on the
    // `speed_istio_json` test.
    unsafe { eq_mask64_sse2(block, byte) }
}

#[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
#[inline]
#[target_feature(enable = "sse2")]
fn eq_mask64_sse2(block: &[u8; 64], byte: u8) -> u64 {
    use std::arch::x86_64::{_mm_cmpeq_epi8, _mm_movemask_epi8, _mm_set1_epi8, _mm_set_epi64x};
    let needle = _mm_set1_epi8(byte as i8);
    let mut m = 0u64;
    for (k, chunk) in block.chunks_exact(16).enumerate() {
        let (lo, hi) = chunk.split_at(8);
        // Two 8-byte reads; LLVM merges them into one unaligned 16-byte load.
        let lo = i64::from_le_bytes(lo.try_into().unwrap_or([0; 8]));
        let hi = i64::from_le_bytes(hi.try_into().unwrap_or([0; 8]));
        let v = _mm_set_epi64x(hi, lo);
        m |= (_mm_movemask_epi8(_mm_cmpeq_epi8(v, needle)) as u16 as u64) << (16 * k);
    }
    m
}

#[cfg(not(all(target_arch = "x86_64", target_feature = "sse2")))]
#[inline(always)]
fn eq_mask64(block: &[u8; 64], byte: u8) -> u64 {
    eq_mask64_portable(block, byte)
}

/// Portable [`eq_mask64`] (the fallback, and the reference in tests).
#[cfg(any(test, not(all(target_arch = "x86_64", target_feature = "sse2"))))]
fn eq_mask64_portable(block: &[u8; 64], byte: u8) -> u64 {
    let mut m = 0u64;
    for (k, &c) in block.iter().enumerate() {
        m |= ((c == byte) as u64) << k;
    }
    m
}

/// `s[p]` is a backslash: check the escape and return the index after it.
#[cold]
fn skip_escape(s: &[u8], p: usize) -> Result<usize, ScanError> {
    match s.get(p + 1) {
        Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => Ok(p + 2),
        Some(b'u') => {
            for k in 0..4 {
                match s.get(p + 2 + k) {
                    Some(b) if b.is_ascii_hexdigit() => {}
                    Some(_) => return Err(ScanError::BadSyntax),
                    None => return Err(ScanError::Truncated),
                }
            }
            Ok(p + 6)
        }
        Some(_) => Err(ScanError::BadSyntax),
        None => Err(ScanError::Truncated),
    }
}

/// Skip a nested object or array starting at `i` (`{` or `[`): brackets are matched by
/// kind, strings are skipped so brackets inside them do not count. Returns the index
/// after the closing bracket.
#[cold]
fn skip_nested(sp: &mut Specials<'_>, mut i: usize) -> Result<usize, ScanError> {
    let s = sp.s;
    // Bit d of `kinds` is 1 when nesting level d is an array.
    let mut kinds: u64 = 0;
    let mut depth: usize = 0;
    while let Some(&b) = s.get(i) {
        match b {
            b'{' | b'[' => {
                if depth >= MAX_DEPTH {
                    return Err(ScanError::BadSyntax);
                }
                let bit = 1u64 << depth;
                if b == b'[' {
                    kinds |= bit;
                } else {
                    kinds &= !bit;
                }
                depth += 1;
            }
            b'}' | b']' => {
                let Some(d) = depth.checked_sub(1) else {
                    return Err(ScanError::BadSyntax);
                };
                let is_array = kinds & (1u64 << d) != 0;
                if is_array != (b == b']') {
                    return Err(ScanError::BadSyntax);
                }
                depth = d;
                if depth == 0 {
                    return Ok(i + 1);
                }
            }
            b'"' => {
                let (end, _) = sp.string_end(i + 1)?;
                i = end;
            }
            _ => {}
        }
        i += 1;
    }
    Err(ScanError::Truncated)
}

// ---------------------------------------------------------------------------------
// Compact fast path.
// ---------------------------------------------------------------------------------

/// The line is not in the shape [`CompactScanner`] handles (or is malformed); the caller
/// re-reads it with [`ObjectScanner`], which decides what it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NotCompact;

impl From<ScanError> for NotCompact {
    #[inline(always)]
    fn from(_: ScanError) -> Self {
        NotCompact
    }
}

/// `pos` once the closing `}` has been read.
const DONE: usize = usize::MAX;

/// A walk over one *compact, escape-free* JSON object (what Envoy writes): `{` first, no
/// whitespace between tokens, no `\` anywhere it looks, scalar or string values only.
///
/// In that shape every `"` opens or closes a key or a string value, in order, so the walk
/// pops quote positions off per-block SSE2 bitmaps (a `trailing_zeros` each) instead of
/// looking for string ends, and checks only the few bytes between a key and its value.
/// Whatever it does not handle (whitespace, escapes, nested values, errors of any kind)
/// is [`NotCompact`], and the caller falls back to [`ObjectScanner`]: on the lines this
/// scanner accepts, it yields exactly the members `ObjectScanner` yields (a proptest
/// below checks this), so behaviour does not depend on which path ran.
pub struct CompactScanner<'a> {
    s: &'a [u8],
    /// Start of the 64-byte block whose quotes are in `quotes`.
    base: usize,
    /// Quotes of that block not consumed yet (bit j: `s[base + j]`).
    quotes: u64,
    /// Index of the next key's opening quote, or [`DONE`].
    pos: usize,
}

impl<'a> CompactScanner<'a> {
    /// A scanner over `line`, or [`NotCompact`] when it does not start with `{`.
    #[inline(always)]
    pub fn new(line: &'a [u8]) -> Result<Self, NotCompact> {
        if line.first() != Some(&b'{') {
            return Err(NotCompact);
        }
        let pos = if line.get(1) == Some(&b'}') {
            if skip_ws(line, 2) != line.len() {
                return Err(NotCompact);
            }
            DONE
        } else {
            1
        };
        // Backslashes are looked for in the same SIMD pass as quotes, block by block
        // (see [`block_quotes`]): every string byte lies in a block the walk loads.
        Ok(CompactScanner {
            s: line,
            base: 0,
            quotes: block_quotes(line, 0)?,
            pos,
        })
    }

    /// Position of the next quote, consuming it.
    #[inline(always)]
    fn pop_quote(&mut self) -> Result<usize, NotCompact> {
        if self.quotes == 0 {
            // By value, not through `&mut self`: the scanner then lives in registers.
            (self.base, self.quotes) = next_quote_block(self.s, self.base)?;
        }
        let p = self.base + self.quotes.trailing_zeros() as usize;
        self.quotes &= self.quotes.wrapping_sub(1);
        Ok(p)
    }

    /// The next member, `Ok(None)` after the closing `}` (then the whole line has been
    /// checked), or [`NotCompact`].
    #[inline(always)]
    pub fn next_member(&mut self) -> Result<Option<Member<'a>>, NotCompact> {
        let Some(key) = self.next_key()? else {
            return Ok(None);
        };
        let value = self.value()?;
        Ok(Some(Member {
            key,
            key_escaped: false,
            value,
        }))
    }

    /// The next key (its `:` checked), `Ok(None)` after the closing `}`, or
    /// [`NotCompact`]. Follow each key with [`value`](Self::value) or
    /// [`skip_value`](Self::skip_value): a caller that wants few of the keys thereby
    /// never builds the values of the others.
    #[inline(always)]
    pub fn next_key(&mut self) -> Result<Option<&'a [u8]>, NotCompact> {
        let s = self.s;
        let open = self.pos;
        if open == DONE {
            return Ok(None);
        }
        // The first unconsumed quote must be where the key should start.
        if self.pop_quote()? != open {
            return Err(NotCompact);
        }
        let close = self.pop_quote()?;
        let key = s.get(open + 1..close).ok_or(NotCompact)?;
        if s.get(close + 1) != Some(&b':') {
            return Err(NotCompact);
        }
        self.pos = close + 2;
        Ok(Some(key))
    }

    /// The value after the key just read, and the separator after it checked.
    #[inline(always)]
    pub fn value(&mut self) -> Result<Value<'a>, NotCompact> {
        let s = self.s;
        let v = self.pos;
        // Most values are strings: the next quote being right at `v` says so without
        // reading the byte.
        if self.quotes != 0 && self.base + self.quotes.trailing_zeros() as usize == v {
            let (raw, after) = self.string_at(v)?;
            self.separator(after)?;
            return Ok(Value::Str {
                raw,
                escaped: false,
            });
        }
        let (value, after) = match s.get(v) {
            Some(b'"') => {
                let (raw, after) = self.string_at(v)?;
                (
                    Value::Str {
                        raw,
                        escaped: false,
                    },
                    after,
                )
            }
            Some(b'-' | b'0'..=b'9') => {
                let end = scan_number(s, v)?;
                (Value::Num(s.get(v..end).ok_or(NotCompact)?), end)
            }
            Some(b'n') if s.get(v..v + 4) == Some(b"null") => (Value::Null, v + 4),
            Some(b't') if s.get(v..v + 4) == Some(b"true") => (Value::Bool(true), v + 4),
            Some(b'f') if s.get(v..v + 5) == Some(b"false") => (Value::Bool(false), v + 5),
            _ => return Err(NotCompact),
        };
        self.separator(after)?;
        Ok(value)
    }

    /// Check and pass the value after the key just read, as [`value`](Self::value)
    /// does, without building it.
    #[inline(always)]
    pub fn skip_value(&mut self) -> Result<(), NotCompact> {
        let v = self.pos;
        if self.quotes != 0 && self.base + self.quotes.trailing_zeros() as usize == v {
            let (_, after) = self.string_at(v)?;
            return self.separator(after);
        }
        self.value().map(|_| ())
    }

    /// The string whose opening quote is at `v` (the next quote): its body and the
    /// index after its closing quote.
    #[inline(always)]
    fn string_at(&mut self, v: usize) -> Result<(&'a [u8], usize), NotCompact> {
        if self.pop_quote()? != v {
            return Err(NotCompact);
        }
        let end = self.pop_quote()?;
        let raw = self.s.get(v + 1..end).ok_or(NotCompact)?;
        Ok((raw, end + 1))
    }

    /// After a value ending before `after`: `,` (a key follows) or the closing `}`.
    #[inline(always)]
    fn separator(&mut self, after: usize) -> Result<(), NotCompact> {
        let s = self.s;
        match s.get(after) {
            Some(b',') => self.pos = after + 1,
            Some(b'}') if skip_ws(s, after + 1) == s.len() => self.pos = DONE,
            _ => return Err(NotCompact),
        }
        Ok(())
    }
}

/// The first block after the one at `base` that holds a quote: its start and bitmap.
/// Inlined: as a call, saving and restoring registers cost as much as the SSE2 work.
#[inline(always)]
fn next_quote_block(s: &[u8], mut base: usize) -> Result<(usize, u64), NotCompact> {
    loop {
        base += 64;
        if base >= s.len() {
            return Err(NotCompact);
        }
        let quotes = block_quotes(s, base)?;
        if quotes != 0 {
            return Ok((base, quotes));
        }
    }
}

/// Quote bitmap of the 64 bytes of `s` from `base` (< `s.len()`; fewer at the end), or
/// [`NotCompact`] when they hold a backslash (an escape: the general scanner's job).
/// The walk loads every block from the first to the one of the last quote, so every
/// byte inside a string is checked; a backslash elsewhere is a syntax error anyway.
#[inline(always)]
fn block_quotes(s: &[u8], base: usize) -> Result<u64, NotCompact> {
    let (quotes, backslash) = match s.get(base..).and_then(|r| r.first_chunk::<64>()) {
        Some(block) => quote_mask64(block),
        None => tail_quote_mask(s, s.len().saturating_sub(base)),
    };
    if backslash {
        return Err(NotCompact);
    }
    Ok(quotes)
}

/// [`quote_mask64`] of the last `n` (< 64) bytes of `s`, as [`tail_mask`] does it. The
/// backslash flag may also cover up to 63 bytes before the tail: those are in the
/// block before, already loaded and checked.
#[inline(never)]
fn tail_quote_mask(s: &[u8], n: usize) -> (u64, bool) {
    if let Some(block) = s
        .len()
        .checked_sub(64)
        .and_then(|w| s.get(w..))
        .and_then(|b| <&[u8; 64]>::try_from(b).ok())
    {
        let (q, b) = quote_mask64(block);
        return (q >> (64 - n.clamp(1, 64)), b);
    }
    let mut padded = [0u8; 64];
    let tail = s.get(s.len().saturating_sub(n)..).unwrap_or(&[]);
    if let Some(dst) = padded.get_mut(..tail.len()) {
        dst.copy_from_slice(tail);
    }
    quote_mask64(&padded)
}

/// Bit k set when `block[k]` is `"`, and whether any byte of `block` is `\`: one pass.
#[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
#[inline(always)]
fn quote_mask64(block: &[u8; 64]) -> (u64, bool) {
    // SAFETY: `quote_mask64_sse2` only requires SSE2, which this cfg guarantees is
    // enabled at compile time (x86_64 baseline); it reads only inside `block`.
    unsafe { quote_mask64_sse2(block) }
}

#[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
#[inline]
#[target_feature(enable = "sse2")]
unsafe fn quote_mask64_sse2(block: &[u8; 64]) -> (u64, bool) {
    use std::arch::x86_64::{
        __m128i, _mm_cmpeq_epi8, _mm_loadu_si128, _mm_movemask_epi8, _mm_or_si128, _mm_set1_epi8,
    };
    let quote = _mm_set1_epi8(b'"' as i8);
    let backslash = _mm_set1_epi8(b'\\' as i8);
    let p = block.as_ptr() as *const __m128i;
    // SAFETY: `block` is 64 bytes, so the four unaligned 16-byte loads at offsets
    // 0, 16, 32, 48 stay inside it.
    let (v0, v1, v2, v3) = unsafe {
        (
            _mm_loadu_si128(p),
            _mm_loadu_si128(p.add(1)),
            _mm_loadu_si128(p.add(2)),
            _mm_loadu_si128(p.add(3)),
        )
    };
    let m = |v| _mm_movemask_epi8(_mm_cmpeq_epi8(v, quote)) as u16 as u64;
    let quotes = m(v0) | (m(v1) << 16) | (m(v2) << 32) | (m(v3) << 48);
    let b01 = _mm_or_si128(_mm_cmpeq_epi8(v0, backslash), _mm_cmpeq_epi8(v1, backslash));
    let b23 = _mm_or_si128(_mm_cmpeq_epi8(v2, backslash), _mm_cmpeq_epi8(v3, backslash));
    let any = _mm_movemask_epi8(_mm_or_si128(b01, b23)) != 0;
    (quotes, any)
}

#[cfg(not(all(target_arch = "x86_64", target_feature = "sse2")))]
#[inline(always)]
fn quote_mask64(block: &[u8; 64]) -> (u64, bool) {
    quote_mask64_portable(block)
}

/// Portable [`quote_mask64`] (the fallback, and the reference in tests).
#[cfg(any(test, not(all(target_arch = "x86_64", target_feature = "sse2"))))]
fn quote_mask64_portable(block: &[u8; 64]) -> (u64, bool) {
    let mut m = 0u64;
    for (k, &c) in block.iter().enumerate() {
        m |= ((c == b'"') as u64) << k;
    }
    (m, block.contains(&b'\\'))
}

// ---------------------------------------------------------------------------------
// Value conversions shared by the JSON access-log parsers.
// ---------------------------------------------------------------------------------

use crate::malformed::Reason;
use crate::parse::num;

impl<'a> Value<'a> {
    /// Text of a value for a string field of the Record, borrowed from `line` (the line
    /// the value was scanned from): string (with `"-"` → ""), `null` → "", numbers and
    /// booleans as written. An escaped string is [`Reason::UnsupportedEscape`] (we do
    /// not decode); an object/array is [`Reason::BadSyntax`].
    #[inline]
    pub fn text_field(self, line: &'a str) -> Result<&'a str, Reason> {
        match self {
            Value::Str { escaped: true, .. } => Err(Reason::UnsupportedEscape),
            Value::Str { raw: b"-", .. } | Value::Null => Ok(""),
            Value::Str { raw, .. } | Value::Num(raw) => Ok(str_of(line, raw)),
            Value::Bool(true) => Ok("true"),
            Value::Bool(false) => Ok("false"),
            Value::Nested(_) => Err(Reason::BadSyntax),
        }
    }

    /// Text of a numeric value: `Ok(None)` for `null`, `"-"` or `""`, the digits for a
    /// number or a string, [`Reason::BadNumber`] for booleans and nested values, and
    /// [`Reason::UnsupportedEscape`] for an escaped string.
    #[inline]
    pub fn numeric_text(self) -> Result<Option<&'a [u8]>, Reason> {
        match self {
            Value::Num(raw) => Ok(Some(raw)),
            Value::Str { escaped: true, .. } => Err(Reason::UnsupportedEscape),
            Value::Str {
                raw: b"-" | b"", ..
            }
            | Value::Null => Ok(None),
            Value::Str { raw, .. } => Ok(Some(raw)),
            Value::Bool(_) | Value::Nested(_) => Err(Reason::BadNumber),
        }
    }

    /// An HTTP status (0..=999) from a number or numeric string; `None` when absent.
    #[inline]
    pub fn status(self) -> Result<Option<u16>, Reason> {
        match self.numeric_text()? {
            None => Ok(None),
            Some(t) => num::parse_status(t).map(Some).ok_or(Reason::BadNumber),
        }
    }

    /// A non-negative finite number (integer or float) from a number or numeric
    /// string; `None` when absent.
    #[inline]
    pub fn non_negative_f64(self) -> Result<Option<f64>, Reason> {
        match self.numeric_text()? {
            None => Ok(None),
            Some(t) => num::parse_f64(t).map(Some).ok_or(Reason::BadNumber),
        }
    }

    /// An RFC 3339 timestamp string → ms since the epoch; `None` for `null`, `"-"` or
    /// `""`; [`Reason::BadTimestamp`] for anything else that does not parse.
    #[inline]
    pub fn rfc3339_ms(self) -> Result<Option<i64>, Reason> {
        match self {
            Value::Null
            | Value::Str {
                raw: b"-" | b"", ..
            } => Ok(None),
            Value::Str { escaped: true, .. } => Err(Reason::UnsupportedEscape),
            Value::Str { raw, .. } => rfc3339_ms(raw).map(Some).ok_or(Reason::BadTimestamp),
            _ => Err(Reason::BadTimestamp),
        }
    }

    /// A gRPC status: a number or numeric string that fits `u16`, or a canonical code
    /// name in Envoy's `%GRPC_STATUS%` spellings (`Unavailable`, `UNAVAILABLE`); `None`
    /// when absent. Anything else is [`Reason::BadNumber`].
    #[inline]
    pub fn grpc_status(self) -> Result<Option<u16>, Reason> {
        match self.numeric_text()? {
            None => Ok(None),
            Some(t) => {
                if let Some(v) = num::parse_u64(t) {
                    return u16::try_from(v).map(Some).map_err(|_| Reason::BadNumber);
                }
                grpc_code_by_name(t).map(Some).ok_or(Reason::BadNumber)
            }
        }
    }
}

/// [`crate::parse::time::parse_rfc3339_ms`], with a fast path for the shape Envoy writes
/// (`2026-11-26T05:06:07.130Z`: 24 bytes, ms precision, UTC); any other shape, or a
/// field out of range, goes to the general parser, so the result is always its result.
///
/// Consecutive log lines mostly fall in the same minute, so the value of the last
/// `YYYY-MM-DDTHH:MM` seen (per thread) is kept: on a match only `:SS.mmmZ` is parsed.
#[inline(always)]
pub fn rfc3339_ms(raw: &[u8]) -> Option<i64> {
    if let Ok(b) = <&[u8; 24]>::try_from(raw) {
        let (head, tail) = b.split_at(16);
        if let (Ok(head), Ok(tail)) = (<&[u8; 16]>::try_from(head), <&[u8; 8]>::try_from(tail)) {
            if let Some(in_minute) = second_and_ms(tail) {
                let last = LAST_MINUTE.try_with(Cell::get).ok().flatten();
                if let Some((last_head, base)) = last {
                    if last_head == *head {
                        return Some(base + in_minute);
                    }
                }
                return new_minute(head, in_minute).or_else(|| rfc3339_ms_general(raw));
            }
        }
    }
    rfc3339_ms_general(raw)
}

/// [`rfc3339_ms`] in a minute other than the last one: remembered when valid.
#[inline(never)]
fn new_minute(head: &[u8; 16], in_minute: i64) -> Option<i64> {
    let base = minute_ms(head)?;
    let _ = LAST_MINUTE.try_with(|c| c.set(Some((*head, base))));
    Some(base + in_minute)
}

/// The general parser, out of line (rare: not Envoy's shape).
#[inline(never)]
fn rfc3339_ms_general(raw: &[u8]) -> Option<i64> {
    crate::parse::time::parse_rfc3339_ms(raw)
}

thread_local! {
    /// The last `YYYY-MM-DDTHH:MM` that [`minute_ms`] accepted, and its value.
    static LAST_MINUTE: Cell<Option<([u8; 16], i64)>> = const { Cell::new(None) };
}

/// `YYYY-MM-DDTHH:MM` with every field in range → ms since the epoch, else `None`.
#[inline(never)]
fn minute_ms(b: &[u8; 16]) -> Option<i64> {
    if b[4] != b'-' || b[7] != b'-' || b[10] != b'T' || b[13] != b':' {
        return None;
    }
    // Digit values; for a non-digit, `value + 6` reaches 16, so one OR of all of them
    // tells whether any is not a digit.
    let d = |i: usize| b[i].wrapping_sub(b'0') as u32;
    let all = (d(0) + 6) | (d(1) + 6) | (d(2) + 6) | (d(3) + 6) | (d(5) + 6) | (d(6) + 6);
    let all = all | (d(8) + 6) | (d(9) + 6) | (d(11) + 6) | (d(12) + 6) | (d(14) + 6);
    if (all | (d(15) + 6)) >= 16 {
        return None;
    }
    let two = |i: usize| d(i) * 10 + d(i + 1);
    let year = (d(0) * 1000 + d(1) * 100 + two(2)) as i64;
    let (month, day, hour, min) = (two(5), two(8), two(11), two(14));
    // The general parser's range checks (it rejects these, so let it say so).
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour >= 24 || min >= 60 {
        return None;
    }
    let days = crate::parse::time::days_from_civil(year, month, day);
    Some((days * 86400 + hour as i64 * 3600 + min as i64 * 60) * 1000)
}

/// `:SS.mmmZ` (seconds at most 60, as the general parser allows) → ms into the minute.
#[inline(always)]
fn second_and_ms(t: &[u8; 8]) -> Option<i64> {
    if t[0] != b':' || t[3] != b'.' || t[7] != b'Z' {
        return None;
    }
    let d = |i: usize| t[i].wrapping_sub(b'0') as u32;
    if ((d(1) + 6) | (d(2) + 6) | (d(4) + 6) | (d(5) + 6) | (d(6) + 6)) >= 16 {
        return None;
    }
    let sec = d(1) * 10 + d(2);
    if sec > 60 {
        return None;
    }
    Some((sec * 1000 + d(4) * 100 + d(5) * 10 + d(6)) as i64)
}

/// gRPC canonical codes by name, in the CamelCase (Envoy default `%GRPC_STATUS%`) and
/// UPPER_SNAKE spellings; both `Canceled` and `Cancelled`.
pub fn grpc_code_by_name(name: &[u8]) -> Option<u16> {
    const NAMES: [(&str, &str, u16); 17] = [
        ("Ok", "OK", 0),
        ("Canceled", "CANCELLED", 1),
        ("Unknown", "UNKNOWN", 2),
        ("InvalidArgument", "INVALID_ARGUMENT", 3),
        ("DeadlineExceeded", "DEADLINE_EXCEEDED", 4),
        ("NotFound", "NOT_FOUND", 5),
        ("AlreadyExists", "ALREADY_EXISTS", 6),
        ("PermissionDenied", "PERMISSION_DENIED", 7),
        ("ResourceExhausted", "RESOURCE_EXHAUSTED", 8),
        ("FailedPrecondition", "FAILED_PRECONDITION", 9),
        ("Aborted", "ABORTED", 10),
        ("OutOfRange", "OUT_OF_RANGE", 11),
        ("Unimplemented", "UNIMPLEMENTED", 12),
        ("Internal", "INTERNAL", 13),
        ("Unavailable", "UNAVAILABLE", 14),
        ("DataLoss", "DATA_LOSS", 15),
        ("Unauthenticated", "UNAUTHENTICATED", 16),
    ];
    match name {
        b"Cancelled" | b"CANCELED" => return Some(1),
        _ => {}
    }
    NAMES
        .iter()
        .find(|(camel, snake, _)| camel.as_bytes() == name || snake.as_bytes() == name)
        .map(|(_, _, code)| *code)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Collect members or the error.
    fn members(line: &str) -> Result<Vec<Member<'_>>, ScanError> {
        let mut out = Vec::new();
        scan_object(line.as_bytes(), |m| {
            out.push(m);
            Ok::<(), ScanError>(())
        })?;
        Ok(out)
    }

    fn s(raw: &str) -> Value<'_> {
        Value::Str {
            raw: raw.as_bytes(),
            escaped: false,
        }
    }

    #[test]
    fn walks_all_value_kinds() {
        let line = r#" { "a" : "x" , "bb":12.5e-3,"c":true,"d":false,"e":null,"f":{"g":[1,"]}"]},"h":[],"i":-0 } "#;
        let m = members(line).unwrap();
        let got: Vec<(&str, Value)> = m
            .iter()
            .map(|m| (std::str::from_utf8(m.key).unwrap(), m.value))
            .collect();
        assert_eq!(
            got,
            vec![
                ("a", s("x")),
                ("bb", Value::Num(b"12.5e-3")),
                ("c", Value::Bool(true)),
                ("d", Value::Bool(false)),
                ("e", Value::Null),
                ("f", Value::Nested(br#"{"g":[1,"]}"]}"#)),
                ("h", Value::Nested(b"[]")),
                ("i", Value::Num(b"-0")),
            ]
        );
        assert_eq!(members("{}").unwrap(), vec![]);
        assert_eq!(members(" {\t}\r\n").unwrap(), vec![]);
    }

    #[test]
    fn strings_with_escapes() {
        let line = r#"{"k\"ey":"a\\b\"c\u00e9\/","plain":"long string that goes past the word-at-a-time part into memchr2 territory"}"#;
        let m = members(line).unwrap();
        assert_eq!(m[0].key, br#"k\"ey"#);
        assert!(m[0].key_escaped);
        assert_eq!(
            m[0].value,
            Value::Str {
                raw: br#"a\\b\"c\u00e9\/"#,
                escaped: true
            }
        );
        assert!(!m[1].key_escaped);
        assert_eq!(
            m[1].value,
            s("long string that goes past the word-at-a-time part into memchr2 territory")
        );
        // Escape past the first 64-byte block, and past the first window.
        let long = format!(r#"{{"k":"{}\"{}"}}"#, "x".repeat(40), "y".repeat(7));
        let m = members(&long).unwrap();
        assert_eq!(m.len(), 1);
        assert!(matches!(m[0].value, Value::Str { escaped: true, .. }));
        let longer = format!(
            r#"{{"k":"{}","e":"\\","z":"{}"}}"#,
            "x".repeat(1500),
            "y".repeat(900)
        );
        let m = members(&longer).unwrap();
        assert_eq!(m.len(), 3);
        assert_eq!(
            m[1].value,
            Value::Str {
                raw: b"\\\\",
                escaped: true
            }
        );
        assert_eq!(m[2].value, s(&"y".repeat(900)));
    }

    #[test]
    fn truncated_vs_bad_syntax() {
        use ScanError::*;
        for (line, want) in [
            ("", Truncated),
            ("   ", Truncated),
            ("{", Truncated),
            (r#"{"a"#, Truncated),
            (r#"{"a""#, Truncated),
            (r#"{"a":"#, Truncated),
            (r#"{"a":"x"#, Truncated),
            (r#"{"a":"x\"#, Truncated),
            (r#"{"a":"x\u00"#, Truncated),
            (r#"{"a":1"#, Truncated),
            (r#"{"a":1."#, Truncated),
            (r#"{"a":1e"#, Truncated),
            (r#"{"a":-"#, Truncated),
            (r#"{"a":tr"#, Truncated),
            (r#"{"a":nul"#, Truncated),
            (r#"{"a":1,"#, Truncated),
            (r#"{"a":{"b":[1,2"#, Truncated),
            (r#"{"a":1 "#, Truncated),
            ("x", BadSyntax),
            ("[1]", BadSyntax),
            (r#"{"a":1}x"#, BadSyntax),
            (r#"{"a":1}}"#, BadSyntax),
            (r#"{"a":1,}"#, BadSyntax),
            (r#"{a:1}"#, BadSyntax),
            (r#"{"a" 1}"#, BadSyntax),
            (r#"{"a":01}"#, BadSyntax),
            (r#"{"a":1.}"#, BadSyntax),
            (r#"{"a":+1}"#, BadSyntax),
            (r#"{"a":tru}"#, BadSyntax),
            (r#"{"a":"\x"}"#, BadSyntax),
            (r#"{"a":"\u12g4"}"#, BadSyntax),
            (r#"{"a":{"b":1]}"#, BadSyntax),
            (r#"{"a":1 "b":2}"#, BadSyntax),
            (r#"{"a":'x'}"#, BadSyntax),
        ] {
            assert_eq!(members(line).err(), Some(want), "{line}");
        }
        let deep = format!(r#"{{"a":{}{}}}"#, "[".repeat(65), "]".repeat(65));
        assert_eq!(members(&deep).err(), Some(BadSyntax));
        let ok = format!(r#"{{"a":{}{}}}"#, "[".repeat(64), "]".repeat(64));
        assert!(members(&ok).is_ok());
    }

    #[test]
    fn callback_error_stops_the_walk() {
        let mut seen = 0;
        let r = scan_object(br#"{"a":1,"b":2,"c":3}"#, |m| {
            seen += 1;
            if m.key == b"b" {
                Err(Reason::BadNumber)
            } else {
                Ok(())
            }
        });
        assert_eq!(r, Err(Reason::BadNumber));
        assert_eq!(seen, 2);
    }

    #[test]
    fn value_conversions() {
        let line = r#"{"n":7,"c":"outbound|9080|canary|x"}"#;
        let m = members(line).unwrap();
        assert_eq!(m[0].value.text_field(line), Ok("7"));
        assert_eq!(m[1].value.text_field(line), Ok("outbound|9080|canary|x"));
        assert_eq!(s("-").text_field(line), Ok(""));
        assert_eq!(Value::Null.text_field(line), Ok(""));
        assert_eq!(Value::Bool(true).text_field(line), Ok("true"));
        assert_eq!(
            Value::Nested(b"{}").text_field(line),
            Err(Reason::BadSyntax)
        );
        assert_eq!(
            Value::Str {
                raw: b"a\\n",
                escaped: true
            }
            .text_field(line),
            Err(Reason::UnsupportedEscape)
        );
        // A slice that is not part of the line does not leak other memory.
        assert_eq!(str_of(line, b"elsewhere"), "");
        assert_eq!(Value::Num(b"503").status(), Ok(Some(503)));
        assert_eq!(s("503").status(), Ok(Some(503)));
        assert_eq!(s("-").status(), Ok(None));
        assert_eq!(Value::Null.status(), Ok(None));
        assert_eq!(Value::Num(b"1000").status(), Err(Reason::BadNumber));
        assert_eq!(Value::Num(b"-1").status(), Err(Reason::BadNumber));
        assert_eq!(Value::Num(b"200.0").status(), Err(Reason::BadNumber));
        assert_eq!(s("abc").status(), Err(Reason::BadNumber));
        assert_eq!(Value::Bool(true).status(), Err(Reason::BadNumber));
        assert_eq!(Value::Num(b"12.5").non_negative_f64(), Ok(Some(12.5)));
        assert_eq!(
            Value::Num(b"1e400").non_negative_f64(),
            Err(Reason::BadNumber)
        );
        assert_eq!(Value::Num(b"-3").non_negative_f64(), Err(Reason::BadNumber));
        assert_eq!(s("Unavailable").grpc_status(), Ok(Some(14)));
        assert_eq!(s("UNAVAILABLE").grpc_status(), Ok(Some(14)));
        assert_eq!(s("OK").grpc_status(), Ok(Some(0)));
        assert_eq!(s("Cancelled").grpc_status(), Ok(Some(1)));
        assert_eq!(Value::Num(b"14").grpc_status(), Ok(Some(14)));
        assert_eq!(Value::Num(b"70000").grpc_status(), Err(Reason::BadNumber));
        assert_eq!(s("Bogus").grpc_status(), Err(Reason::BadNumber));
        assert_eq!(s("-").grpc_status(), Ok(None));
    }

    /// Reference for `string_end`: closing quote from `from`, skipping `\x` pairs.
    fn naive_string_end(s: &[u8], from: usize) -> Result<(usize, bool), ScanError> {
        let mut i = from;
        let mut escaped = false;
        while let Some(&b) = s.get(i) {
            match b {
                b'"' => return Ok((i, escaped)),
                b'\\' => {
                    escaped = true;
                    i = skip_escape(s, i)?;
                }
                _ => i += 1,
            }
        }
        Err(ScanError::Truncated)
    }

    #[test]
    fn string_end_across_blocks() {
        for len in [0usize, 5, 63, 64, 65, 127, 128, 200, 1030, 2100] {
            for q in (0..len).step_by(1 + len / 150) {
                // One quote (or an escaped quote pair) somewhere in a string of `a`s.
                let mut v = vec![b'a'; len];
                v[q] = b'"';
                if q > 0 && q % 3 == 0 {
                    v[q - 1] = b'\\';
                }
                for from in [0, q / 2, q.saturating_sub(70), q, q + 1] {
                    let mut sp = Specials::new(&v);
                    assert_eq!(
                        sp.string_end(from),
                        naive_string_end(&v, from),
                        "len {len} quote {q} from {from}"
                    );
                }
            }
        }
    }

    /// Collect members with the compact scanner, or `NotCompact`.
    fn compact_members(line: &str) -> Result<Vec<Member<'_>>, NotCompact> {
        let mut out = Vec::new();
        let mut sc = CompactScanner::new(line.as_bytes())?;
        while let Some(m) = sc.next_member()? {
            out.push(m);
        }
        Ok(out)
    }

    #[test]
    fn compact_scanner_takes_envoy_lines_and_leaves_the_rest() {
        let line = r#"{"a":"x","bb":12.5e-3,"c":true,"d":false,"e":null,"i":-0,"s":""}"#;
        assert_eq!(compact_members(line), Ok(members(line).unwrap()));
        assert_eq!(compact_members("{}"), Ok(vec![]));
        assert_eq!(compact_members("{}\r\n"), Ok(vec![]));
        // Long enough to cross blocks, with a quote as the last byte of a block.
        let long = format!(
            r#"{{"k":"{}","l":"{}","m":1}}"#,
            "x".repeat(57),
            "y".repeat(300)
        );
        assert_eq!(long.as_bytes()[63], b'"');
        assert_eq!(compact_members(&long), Ok(members(&long).unwrap()));
        for other in [
            r#" {"a":1}"#,
            r#"{ "a":1}"#,
            r#"{"a" :1}"#,
            r#"{"a": 1}"#,
            r#"{"a":1 }"#,
            r#"{"a":1, "b":2}"#,
            r#"{"a":"\n"}"#,
            r#"{"a":{"b":1}}"#,
            r#"{"a":[]}"#,
            r#"{"a":1}x"#,
            r#"{"a":01}"#,
            r#"{"a":1"#,
            r#"{"a":"x"#,
            r#"{"a":"x","#,
            r#"{"a":1,}"#,
            "",
            "{",
        ] {
            assert_eq!(compact_members(other), Err(NotCompact), "{other}");
        }
    }

    #[test]
    fn masks_of_every_byte_position() {
        for p in 0..64 {
            for byte in [b'"', b'\\', b'a'] {
                let mut block = [b' '; 64];
                block[p] = byte;
                for needle in [b'"', b'\\'] {
                    let want = ((byte == needle) as u64) << p;
                    assert_eq!(eq_mask64(&block, needle), want);
                    assert_eq!(eq_mask64_portable(&block, needle), want);
                }
            }
        }
    }

    #[test]
    fn quote_masks_of_every_byte_position() {
        for p in 0..64 {
            for byte in [b'"', b'\\', b'a'] {
                let mut block = [b' '; 64];
                block[p] = byte;
                let want = (((byte == b'"') as u64) << p, byte == b'\\');
                assert_eq!(quote_mask64(&block), want);
                assert_eq!(quote_mask64_portable(&block), want);
            }
        }
    }

    #[test]
    fn rfc3339_minute_cache_sequences() {
        let general = crate::parse::time::parse_rfc3339_ms;
        for raw in [
            &b"2026-11-26T05:06:07.130Z"[..],
            b"2026-11-26T05:06:59.999Z",
            b"2026-11-26T05:06:60.000Z",
            b"2026-11-26T05:06:61.000Z",
            b"2026-11-26T05:06:07.13xZ",
            b"2026-11-26T05:06:07,130Z",
            b"2026-11-26T05:07:00.000Z",
            b"2026-11-26T05:06:07.130Z",
            b"2026-11-26T25:06:07.130Z",
            b"2026-11-26T05:06:07.130Z",
            b"2026-11-26T05:06:07.130+01:00",
            b"2026-11-26T05:06:07.1302Z",
            b"2026-13-26T05:06:07.130Z",
            b"2026-11-26T05:06:07.130Z",
        ] {
            assert_eq!(
                rfc3339_ms(raw),
                general(raw),
                "{}",
                String::from_utf8_lossy(raw)
            );
        }
        assert!(rfc3339_ms(b"2026-11-26T05:06:07.130Z").is_some());
    }

    proptest! {
        #[test]
        fn arbitrary_text_never_panics(line in ".{0,200}") {
            let _ = members(&line);
        }

        #[test]
        fn arbitrary_json_ish_text_never_panics(line in r#"[{}\[\]":,\\ a0-9.eE+\-tfnul]{0,80}"#) {
            let _ = members(&line);
        }

        #[test]
        fn simd_masks_agree_with_portable(
            block in proptest::collection::vec(prop_oneof![Just(b'"'), Just(b'\\'), any::<u8>()], 64),
            needle in prop_oneof![Just(b'"'), Just(b'\\'), any::<u8>()],
        ) {
            let block: [u8; 64] = block.try_into().unwrap();
            prop_assert_eq!(eq_mask64(&block, needle), eq_mask64_portable(&block, needle));
        }

        #[test]
        fn simd_quote_masks_agree_with_portable(
            block in proptest::collection::vec(prop_oneof![Just(b'"'), Just(b'\\'), any::<u8>()], 64),
        ) {
            let block: [u8; 64] = block.try_into().unwrap();
            prop_assert_eq!(quote_mask64(&block), quote_mask64_portable(&block));
        }

        /// Whatever the compact scanner accepts, the general scanner reads the same.
        #[test]
        fn compact_scanner_agrees_with_general(line in r#"\{("[a-z"\\]{0,3}":([0-9.e\-]{1,4}|"[ -~]{0,70}"|null|true|false|\{\}),?){0,6}[\} \r]{0,2}"#) {
            if let Ok(m) = compact_members(&line) {
                prop_assert_eq!(Ok(m), members(&line));
            }
        }

        #[test]
        fn compact_scanner_agrees_on_valid_objects(
            keys in proptest::collection::vec("[a-z_]{1,12}", 1..8),
            vals in proptest::collection::vec(r#"("[ -!#-\[\]-~]{0,70}"|-?[1-9][0-9]{0,5}(\.[0-9]{1,3})?|true|false|null)"#, 8),
            cut in any::<prop::sample::Index>(),
        ) {
            let body: Vec<String> = keys.iter().zip(vals.iter()).map(|(k, v)| format!("\"{k}\":{v}")).collect();
            let line = format!("{{{}}}", body.join(","));
            prop_assert_eq!(compact_members(&line), Ok(members(&line).unwrap()));
            let cut = cut.index(line.len());
            prop_assert_eq!(compact_members(&line[..cut]), Err(NotCompact));
        }

        /// The Envoy-shape fast path gives the general parser's result, in range or not.
        #[test]
        fn rfc3339_fast_path_agrees(
            t in r#"[0-9]{4}-[01][0-9]-[0-3][0-9][Tt ][0-2][0-9]:[0-6][0-9]:[0-6][0-9][.,][0-9]{3}[Zz+]"#,
            other in r#"[0-9T:.Z+-]{20,26}"#,
        ) {
            for raw in [t.as_bytes(), other.as_bytes()] {
                prop_assert_eq!(rfc3339_ms(raw), crate::parse::time::parse_rfc3339_ms(raw));
            }
        }

        /// Same minute, any seconds part: the cached minute gives the general result.
        #[test]
        fn rfc3339_minute_cache_agrees(
            tails in proptest::collection::vec(r#"[:.Z0-9x]{8}|:[0-6][0-9]\.[0-9]{3}Z"#, 1..6),
            minute in r#"2026-11-26T0[0-2]:0[0-2]|2026-1[0-3]-26T05:06"#,
        ) {
            for tail in &tails {
                let raw = format!("{minute}{tail}");
                prop_assert_eq!(rfc3339_ms(raw.as_bytes()), crate::parse::time::parse_rfc3339_ms(raw.as_bytes()), "{}", raw);
            }
        }

        #[test]
        fn compact_scanner_never_panics(line in ".{0,200}") {
            let _ = compact_members(&line);
        }

        #[test]
        fn every_cut_of_a_valid_object_is_an_error(
            keys in proptest::collection::vec("[a-z_]{1,12}", 1..8),
            vals in proptest::collection::vec(r#"("[ -!#-\[\]-~]{0,40}"|-?[1-9][0-9]{0,5}(\.[0-9]{1,3})?|true|null|\{"x":\[1,"}"\]\})"#, 8),
        ) {
            let body: Vec<String> = keys.iter().zip(vals.iter()).map(|(k, v)| format!("\"{k}\":{v}")).collect();
            let line = format!("{{{}}}", body.join(","));
            prop_assert_eq!(members(&line).map(|m| m.len()), Ok(keys.len()));
            for cut in 0..line.len() {
                // Every prefix of valid JSON is a valid prefix: always Truncated.
                let r = members(&line[..cut]);
                prop_assert_eq!(r, Err(ScanError::Truncated), "cut at {}: {:?}", cut, &line[..cut]);
            }
        }
    }
}
