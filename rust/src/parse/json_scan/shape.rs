//! The member layout ("shape") of compact JSON lines, learned from one line and checked
//! on the next ones.
//!
//! One Envoy writes every access-log line with the same keys in the same order (the
//! order of its `json_format` map); only the values change. A [`Shape`] remembers the
//! exact bytes before each value of such a line (`{"start_time":`, `,"route_name":`, ...)
//! and, for each member, a caller tag (which field it is, or none). [`Shape::walk`] then
//! reads a line by comparing those bytes at once (SSE2, up to 48 bytes per member) and
//! looking only for where each value ends: no key is searched for, none is matched by
//! name, and values of keys nobody reads are not built.
//!
//! Many values also repeat from line to line (route name, protocol, `null`s, response
//! details, local addresses). So a member's compare also covers the value it had on the
//! first line walked, when that fits in the 48 bytes: while the value stays the same,
//! the member costs one compare and nothing else. A line where it differs reads the value
//! the slower way; only when that happens too often for the template to pay (see
//! [`Entry::too_many_misses`]) is the value dropped from the compare (keeping a string's
//! opening quote). Every [`RELEARN_WALKS`] walks, the members without a template learn one
//! again from the next line: a value that was rare on the first line (a 201 among 200s)
//! or a member whose values changed (a `null` that became the norm) gets its chance.
//!
//! Safety net: whatever `walk` accepts is a compact, escape-free JSON object whose members
//! are exactly the learned keys, in order, with scalar or string values (every byte of
//! it checked: key bytes compared, strings searched to their end for `"` and `\`,
//! numbers by the JSON grammar, literals exactly, only whitespace after `}`); the
//! general [`super::ObjectScanner`] reads such a line as the same members. Anything else,
//! including a line whose layout differs from the learned one, is a [`Miss`]: the caller
//! then reads the line another way (and usually learns its shape).

use super::{scan_number, skip_ws, Value};
#[cfg(target_arch = "x86_64")]
use crate::parse::istio_text::masks::Avx2;
use crate::parse::istio_text::masks::Baseline;

/// Most members a learned shape holds (a line with more is never walked by a shape).
pub const MAX_MEMBERS: usize = 40;

/// Room for the bytes one compare checks: `{"` or `,"`, the key, `":`, and maybe the
/// value (see [`State`]). A key longer than `KEY_CAP - 4` bytes makes the line's shape
/// unlearnable.
const KEY_CAP: usize = 48;

/// Walks between two relearnings of the members without a template (a power of two).
const RELEARN_WALKS: u32 = 1024;

/// The line does not have the learned shape (or is not compact / escape-free JSON, or
/// the caller refused a value). Nothing is wrong with the line yet: read it
/// another way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Miss;

/// `KEY_CAP` bytes on a 16-byte boundary, so that SSE2 compares read them with aligned
/// loads (folded into the compare instructions).
#[derive(Debug, Clone, Copy)]
#[repr(C, align(16))]
struct Row([u8; KEY_CAP]);

/// What a member's compare covers beyond its key, and so what is left to do after it
/// matches. Values repeat from line to line (route name, protocol, `null`s, response
/// details, local addresses), so a member starts by expecting the value it had on the
/// first line walked and falls back to less on the first line where that fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Just learned: the key only; the next walk reads the value and makes it the
    /// [`Template`](State::Template).
    Fresh,
    /// The key and a whole value of `kind` (a number also the byte after it, `,` or
    /// `}`, so that a longer number does not match): nothing left to read.
    Template,
    /// The key and the opening `"` of a string: its end is searched for.
    Str,
    /// The key; the value is expected to be a number (read inline).
    Num,
    /// The key only: the value is read whatever it is.
    Any,
}

/// The kind of a [`State::Template`] value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Str,
    Num,
    Null,
    True,
    False,
}

/// The bytes one member is compared with, what they cover, and the caller's tag.
#[derive(Debug, Clone, Copy)]
#[repr(C, align(64))]
struct Entry<T> {
    /// `{"key":` for the first member, `,"key":` for the others, then what `state`
    /// says; the rest is ignored (`mask`).
    bytes: Row,
    /// Bit k set: byte k of `bytes` must match.
    mask: u64,
    /// Bytes up to and including the key's `:`.
    key_len: u8,
    /// Bytes a match covers (the value starts at `key_len`, or is looked for from
    /// `len` on, per `state`).
    len: u8,
    /// `mask` reaches past 32 bytes: the third 16-byte chunk is compared too.
    wide: bool,
    /// Whether this is the last member (a number template then ends with `}`).
    last: bool,
    state: State,
    kind: Kind,
    tag: Option<T>,
    /// The walk count when the template was learned, and the lines since then whose
    /// value differed from it.
    since: u32,
    misses: u32,
}

impl<T> Entry<T> {
    /// Compare `n` bytes from now on, and walk `len` of them on a match.
    #[inline]
    fn expect(&mut self, n: usize, len: usize, state: State) {
        self.mask = low_bits(n);
        self.wide = n > 32;
        self.len = len as u8;
        self.state = state;
    }

    /// Compare the key and the opening `"` of a string from now on (the key only when
    /// the quote does not fit).
    fn expect_string(&mut self) {
        let key = self.key_len as usize;
        match self.bytes.0.get_mut(key) {
            Some(quote) => {
                *quote = b'"';
                self.expect(key + 1, key + 1, State::Str);
            }
            None => self.expect(key, key, State::Any),
        }
    }

    /// After a value of `found` kind the template did not match: whether the template
    /// has missed too often to pay. A hit saves ~10 instructions for a string or number
    /// (the end search) and ~35 for a literal (`read_other`), a miss costs ~40 (this call)
    /// over the state without template, so strings and numbers keep it below a miss rate
    /// of 1 in 5, literals below 1 in 2; the first 16 lines are a grace period.
    fn too_many_misses(&mut self, walks: u32) -> bool {
        self.misses = self.misses.saturating_add(1);
        let seen = walks.wrapping_sub(self.since).saturating_add(16);
        let per_miss: u32 = match self.kind {
            Kind::Str | Kind::Num => 5,
            Kind::Null | Kind::True | Kind::False => 2,
        };
        self.misses.saturating_mul(per_miss) > seen
    }

    /// After a value the learned state did not expect (of `found` kind): settle for less
    /// next time. A template gives way to what this value needs (a string's quote, a
    /// number); a string (number) member holding something else stays as it is (the
    /// slower path costs little more than `Any` would).
    fn demote(&mut self, found: Kind) {
        let key = self.key_len as usize;
        match (self.state, found) {
            (State::Template, Kind::Str) => self.expect_string(),
            (State::Template, Kind::Num) => self.expect(key, key, State::Num),
            (State::Str | State::Num, _) => {}
            _ => self.expect(key, key, State::Any),
        }
    }

    /// Back to learning a template from the next line walked (members without one).
    fn relearn(&mut self) {
        if !matches!(self.state, State::Template | State::Fresh) {
            let key = self.key_len as usize;
            self.expect(key, key, State::Fresh);
        }
    }

    /// The member at `pos` (whose bytes compared as `eq`) when it is not a matching
    /// `Template` or `Str`, or a `Num` with a number: its end and kind, updating the
    /// state.
    /// `walks` is the shape's walk count.
    #[inline(never)]
    fn read_other(
        &mut self,
        s: &[u8],
        pos: usize,
        eq: u64,
        walks: u32,
    ) -> Result<(usize, Kind), Miss> {
        let v = pos + self.key_len as usize;
        if eq & self.mask == self.mask {
            // `Fresh`, `Any`, or `Num` without a number: the key only was compared.
            let (end, kind) = value_end(s, v)?;
            if self.state == State::Fresh {
                self.learn_value(s, pos, end, kind, walks);
            }
            return Ok((end, kind));
        }
        let key = low_bits(self.key_len as usize);
        if eq & key != key {
            return Err(Miss);
        }
        let found = value_end(s, v)?;
        if self.state != State::Template || self.too_many_misses(walks) {
            self.demote(found.1);
        }
        Ok(found)
    }

    /// First line walked (`Fresh`): make the value just read (`s[v..end]`, of `kind`,
    /// the member starting at `pos`) the template when it fits.
    #[cold]
    fn learn_value(&mut self, s: &[u8], pos: usize, end: usize, kind: Kind, walks: u32) {
        let key = self.key_len as usize;
        self.since = walks;
        self.misses = 0;
        let total = end - pos;
        // A number is followed by `,` or `}`: compared too.
        let compared = total + (kind == Kind::Num) as usize;
        self.kind = kind;
        match (s.get(pos..end), self.bytes.0.get_mut(..compared)) {
            (Some(member), Some(dst)) => {
                if let Some((after, head)) = dst.split_last_mut() {
                    if kind == Kind::Num {
                        head.copy_from_slice(member);
                        *after = if self.last { b'}' } else { b',' };
                    } else {
                        dst.copy_from_slice(member);
                    }
                }
                self.expect(compared, total, State::Template);
            }
            _ if kind == Kind::Str => self.expect_string(),
            _ if kind == Kind::Num => self.expect(key, key, State::Num),
            _ => self.expect(key, key, State::Any),
        }
    }
}

/// The low `n` bits set (`n` at most `KEY_CAP`).
#[inline(always)]
fn low_bits(n: usize) -> u64 {
    (1u64 << n) - 1
}

/// A learned layout; see the module docs. `T` is the caller's tag for a member it reads.
#[derive(Debug, Clone)]
pub struct Shape<T> {
    entries: [Entry<T>; MAX_MEMBERS],
    /// Learned members; 0 = nothing learned (every walk misses). While learning: the
    /// members recorded so far.
    n: usize,
    /// A line is being recorded and still fits.
    learning: bool,
    /// Lines walked (wrapping), for the template statistics and the relearning.
    walks: u32,
}

impl<T: Copy> Shape<T> {
    /// Nothing learned.
    pub const EMPTY: Shape<T> = Shape {
        entries: [Entry {
            bytes: Row([0; KEY_CAP]),
            mask: 0,
            key_len: 0,
            len: 0,
            wide: false,
            last: false,
            state: State::Fresh,
            kind: Kind::Str,
            tag: None,
            since: 0,
            misses: 0,
        }; MAX_MEMBERS],
        n: 0,
        learning: false,
        walks: 0,
    };

    /// Forget the learned layout and record the keys of the line about to be read with
    /// [`learn_key`](Self::learn_key).
    #[inline]
    pub fn start_learning(&mut self) {
        self.n = 0;
        self.learning = true;
    }

    /// Record the next key of a compact line (written as `{"key":` when first, else
    /// `,"key":`, which is what a compact walk has just checked) and its tag.
    #[inline]
    pub fn learn_key(&mut self, key: &[u8], tag: Option<T>) {
        if !self.learning {
            return;
        }
        let first = self.n == 0;
        let len = key.len() + 4;
        // A key with a quote or backslash never comes from a compact walk; refused all
        // the same, as the compares rely on it.
        let plain = !key.iter().any(|&b| b == b'"' || b == b'\\');
        match self.entries.get_mut(self.n) {
            Some(e) if len <= KEY_CAP && plain => {
                e.bytes = Row([0; KEY_CAP]);
                e.bytes.0[0] = if first { b'{' } else { b',' };
                e.bytes.0[1] = b'"';
                if let Some(dst) = e.bytes.0.get_mut(2..2 + key.len()) {
                    dst.copy_from_slice(key);
                }
                e.bytes.0[len - 2] = b'"';
                e.bytes.0[len - 1] = b':';
                e.key_len = len as u8;
                e.last = false;
                e.kind = Kind::Str;
                e.expect(len, len, State::Fresh);
                e.tag = tag;
                self.n += 1;
            }
            // Too many members or too long a key: this shape is not learnable.
            _ => self.learning = false,
        }
    }

    /// End recording: keep the recorded layout if the line was read completely (`ok`)
    /// and fitted, else forget it.
    #[inline]
    pub fn finish_learning(&mut self, ok: bool) {
        if !(ok && self.learning) {
            self.n = 0;
        }
        if let Some(last) = self.n.checked_sub(1).and_then(|i| self.entries.get_mut(i)) {
            last.last = true;
        }
        self.learning = false;
    }

    /// Let the members without a template learn one from the next line walked.
    #[cold]
    #[inline(never)]
    fn relearn(&mut self) {
        for e in self.entries.iter_mut().take(self.n) {
            e.relearn();
        }
    }

    /// Walk `s` as a line of the learned shape, calling `on_member` with (tag, value)
    /// for each member with a tag, in line order. `Ok` once the whole line has been
    /// checked (closing `}`, then only whitespace); [`Miss`] when the line does not
    /// have the shape (or `on_member` refuses a value), after which the caller must
    /// not trust what `on_member` was given. Updates what each member expects (see
    /// [`State`]); that only changes how fast lines are walked, never what a walk
    /// accepts or yields.
    #[inline(always)]
    pub fn walk<'a, F>(&mut self, s: &'a [u8], on_member: F) -> Result<(), Miss>
    where
        F: FnMut(T, Value<'a>) -> Result<(), Miss>,
    {
        self.walk_with(Baseline, s, on_member)
    }

    /// [`Shape::walk`] with the string ends searched as `simd` does it (32 bytes at a
    /// time with AVX2, inlined when the caller is compiled with AVX2).
    #[inline(always)]
    pub(crate) fn walk_with<'a, S: StringEnds, F>(
        &mut self,
        simd: S,
        s: &'a [u8],
        mut on_member: F,
    ) -> Result<(), Miss>
    where
        F: FnMut(T, Value<'a>) -> Result<(), Miss>,
    {
        // A line shorter than `KEY_CAP` (never an access-log line) is not walked; the
        // others have a `last_window`.
        let Some(last_window) = s.len().checked_sub(KEY_CAP) else {
            return Err(Miss);
        };
        let walks = self.walks.wrapping_add(1);
        self.walks = walks;
        if walks.is_multiple_of(RELEARN_WALKS) {
            self.relearn();
        }
        let entries = self.entries.get_mut(..self.n).unwrap_or(&mut []);
        if entries.is_empty() {
            return Err(Miss);
        }
        // Where the next member's bytes must be (after the previous value).
        let mut pos = 0;
        for e in entries {
            let eq = if pos <= last_window {
                // SAFETY: `last_window` is `s.len() - KEY_CAP`, so `pos + KEY_CAP <=
                // s.len()`: the array is inside `s` (and `u8` has no alignment). Built
                // by hand because `s.get(pos..)` + `first_chunk` cost seven
                // instructions of checks per member on the hot path.
                let window = unsafe { &*(s.as_ptr().add(pos) as *const [u8; KEY_CAP]) };
                eq_bits(window, &e.bytes, e.wide)
            } else {
                tail_eq_bits(s, pos, &e.bytes)
            };
            // The two common cases inline, the others in `read_other`.
            let matched = eq & e.mask == e.mask;
            let (end, kind) = if matched && e.state == State::Template {
                (pos + e.len as usize, e.kind)
            } else if matched && e.state == State::Str {
                (string_end_with(simd, s, pos + e.len as usize)?, Kind::Str)
            } else if let (true, State::Num, Some(b'-' | b'0'..=b'9')) =
                (matched, e.state, s.get(pos + e.len as usize))
            {
                let end = scan_number(s, pos + e.len as usize).map_err(|_| Miss)?;
                (end, Kind::Num)
            } else {
                e.read_other(s, pos, eq, walks)?
            };
            if let Some(tag) = e.tag {
                on_member(tag, value_of(s, kind, pos + e.key_len as usize, end)?)?;
            }
            pos = end;
        }
        if s.get(pos) == Some(&b'}') && skip_ws(s, pos + 1) == s.len() {
            Ok(())
        } else {
            Err(Miss)
        }
    }
}

/// [`eq_bits`] of the bytes of `s` from `pos` on (fewer than `KEY_CAP`: the last
/// members of a line; `s` is at least `KEY_CAP` long); the bits past the end of `s` are
/// clear.
///
/// The last `KEY_CAP` bytes of `s` are compared with `row` moved right by `d`, the
/// distance from their start to `pos`, so that bit `d + k` says whether `s[pos + k] ==
/// row[k]`: shifting the bits down by `d` gives the answer, and drops the bits of the
/// bytes past the end (fixed-size copies only, no `memcpy` call).
#[inline(never)]
fn tail_eq_bits(s: &[u8], pos: usize, row: &Row) -> u64 {
    let start = s.len().saturating_sub(KEY_CAP);
    let d = pos.saturating_sub(start);
    let (Some(window), true) = (
        s.get(start..).and_then(|w| w.first_chunk::<KEY_CAP>()),
        d <= KEY_CAP,
    ) else {
        return 0;
    };
    let mut moved = [0u8; 2 * KEY_CAP];
    if let Some(dst) = moved
        .get_mut(d..)
        .and_then(|m| m.first_chunk_mut::<KEY_CAP>())
    {
        *dst = row.0;
    }
    let shifted = match moved.first_chunk::<KEY_CAP>() {
        Some(m) => Row(*m),
        None => return 0,
    };
    eq_bits(window, &shifted, true) >> d
}

/// The index after the string whose body starts at `from`.
#[inline(always)]
fn string_end(s: &[u8], from: usize) -> Result<usize, Miss> {
    string_end_with(Baseline, s, from)
}

/// [`string_end`] searching as `simd` does.
#[inline(always)]
fn string_end_with<S: StringEnds>(simd: S, s: &[u8], from: usize) -> Result<usize, Miss> {
    let end = simd.first_special(s, from).ok_or(Miss)?;
    match s.get(end) {
        Some(b'"') => Ok(end + 1),
        _ => Err(Miss),
    }
}

/// How a string's end (its first `"` or `\`) is searched; implemented by the SIMD tokens
/// of the TEXT parser's masks (`Baseline`: 16 bytes at a time with SSE2; `Avx2`: 32).
pub(crate) trait StringEnds: Copy {
    /// Index of the first `"` or `\` at or after `from`.
    fn first_special(self, s: &[u8], from: usize) -> Option<usize>;
}

impl StringEnds for Baseline {
    #[inline(always)]
    fn first_special(self, s: &[u8], from: usize) -> Option<usize> {
        first_special(s, from)
    }
}

#[cfg(target_arch = "x86_64")]
impl StringEnds for Avx2 {
    #[inline(always)]
    fn first_special(self, s: &[u8], from: usize) -> Option<usize> {
        // SAFETY: `self` exists, so `Avx2::detect` (a runtime
        // `is_x86_feature_detected!("avx2")`) saw AVX2 on this CPU.
        unsafe { first_special_avx2(s, from) }
    }
}

/// [`first_special`] 32 bytes at a time, then as [`first_special`] for the last < 32.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[inline]
fn first_special_avx2(s: &[u8], mut from: usize) -> Option<usize> {
    use std::arch::x86_64::{
        __m256i, _mm256_cmpeq_epi8, _mm256_loadu_si256, _mm256_movemask_epi8, _mm256_or_si256,
        _mm256_set1_epi8,
    };
    if s.len() >= 32 {
        let last = s.len() - 32;
        while from <= last {
            // SAFETY: `from + 32 <= s.len()`: the unaligned 32-byte load is inside `s`.
            let v = unsafe { _mm256_loadu_si256(s.as_ptr().add(from) as *const __m256i) };
            let q = _mm256_cmpeq_epi8(v, _mm256_set1_epi8(b'"' as i8));
            let b = _mm256_cmpeq_epi8(v, _mm256_set1_epi8(b'\\' as i8));
            let any = _mm256_movemask_epi8(_mm256_or_si256(q, b)) as u32;
            if any != 0 {
                return Some(from + any.trailing_zeros() as usize);
            }
            from += 32;
        }
    }
    first_special(s, from)
}

/// The index after the value at `v` (a string without escapes or a scalar), and its
/// kind.
#[inline(always)]
fn value_end(s: &[u8], v: usize) -> Result<(usize, Kind), Miss> {
    Ok(match s.get(v) {
        Some(b'"') => (string_end(s, v + 1)?, Kind::Str),
        Some(b'-' | b'0'..=b'9') => (scan_number(s, v).map_err(|_| Miss)?, Kind::Num),
        Some(b'n') if s.get(v..v + 4) == Some(b"null") => (v + 4, Kind::Null),
        Some(b't') if s.get(v..v + 4) == Some(b"true") => (v + 4, Kind::True),
        Some(b'f') if s.get(v..v + 5) == Some(b"false") => (v + 5, Kind::False),
        _ => return Err(Miss),
    })
}

/// The value of `kind` from `v` to `end`, as [`value_end`] found it.
#[inline(always)]
fn value_of(s: &[u8], kind: Kind, v: usize, end: usize) -> Result<Value<'_>, Miss> {
    Ok(match kind {
        Kind::Str => Value::Str {
            raw: s.get(v + 1..end.wrapping_sub(1)).ok_or(Miss)?,
            escaped: false,
        },
        Kind::Num => Value::Num(s.get(v..end).ok_or(Miss)?),
        Kind::Null => Value::Null,
        Kind::True => Value::Bool(true),
        Kind::False => Value::Bool(false),
    })
}

/// Index of the first `"` or `\` at or after `from`.
#[inline(always)]
fn first_special(s: &[u8], mut from: usize) -> Option<usize> {
    if s.len() >= 16 {
        let last = s.len() - 16;
        while from <= last {
            // SAFETY: `from + 16 <= s.len()`, so the array is inside `s` (and `u8` has
            // no alignment); by hand for the same reason as in `bytes_at`.
            let chunk = unsafe { &*(s.as_ptr().add(from) as *const [u8; 16]) };
            let any = specials16(chunk);
            if any != 0 {
                return Some(from + any.trailing_zeros() as usize);
            }
            from += 16;
        }
    }
    // The last < 16 bytes of the line.
    while let Some(&b) = s.get(from) {
        if b == b'"' || b == b'\\' {
            return Some(from);
        }
        from += 1;
    }
    None
}

/// Bit k set when `window[k] == row[k]`, for k below 32 (below 48 when `wide`); the
/// bits above are clear.
#[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
#[inline(always)]
fn eq_bits(window: &[u8; KEY_CAP], row: &Row, wide: bool) -> u64 {
    // SAFETY: `eq_bits_sse2` only requires SSE2, which this cfg guarantees is enabled
    // at compile time (x86_64 baseline); it reads only inside its two arrays.
    unsafe { eq_bits_sse2(window, row, wide) }
}

#[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
#[inline]
#[target_feature(enable = "sse2")]
unsafe fn eq_bits_sse2(window: &[u8; KEY_CAP], row: &Row, wide: bool) -> u64 {
    use std::arch::x86_64::{
        __m128i, _mm_cmpeq_epi8, _mm_load_si128, _mm_loadu_si128, _mm_movemask_epi8,
    };
    let (w, r) = (
        window.as_ptr() as *const __m128i,
        row.0.as_ptr() as *const __m128i,
    );
    let chunk = |k: usize| {
        // SAFETY: both arrays are 48 bytes, so 16-byte loads at offsets 0, 16 and 32
        // (k = 0, 1, 2) stay inside them; `row` is a `Row`, 16-byte aligned, so the
        // aligned load is too.
        let (w, r) = unsafe { (_mm_loadu_si128(w.add(k)), _mm_load_si128(r.add(k))) };
        _mm_movemask_epi8(_mm_cmpeq_epi8(w, r)) as u32 as u64
    };
    let mut bits = chunk(0) | chunk(1) << 16;
    if wide {
        bits |= chunk(2) << 32;
    }
    bits
}

#[cfg(not(all(target_arch = "x86_64", target_feature = "sse2")))]
#[inline(always)]
fn eq_bits(window: &[u8; KEY_CAP], row: &Row, wide: bool) -> u64 {
    eq_bits_portable(window, row, wide)
}

/// Portable [`eq_bits`] (the fallback, and the reference in tests).
#[cfg(any(test, not(all(target_arch = "x86_64", target_feature = "sse2"))))]
fn eq_bits_portable(window: &[u8; KEY_CAP], row: &Row, wide: bool) -> u64 {
    let n = if wide { 48 } else { 32 };
    window
        .iter()
        .zip(&row.0)
        .take(n)
        .enumerate()
        .fold(0, |bits, (k, (w, r))| bits | ((w == r) as u64) << k)
}

/// Bitmap of the `"` and `\` bytes of `chunk`.
#[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
#[inline(always)]
fn specials16(chunk: &[u8; 16]) -> u32 {
    // SAFETY: `specials16_sse2` only requires SSE2, which this cfg guarantees is enabled
    // at compile time (x86_64 baseline); it reads only inside `chunk`.
    unsafe { specials16_sse2(chunk) }
}

#[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
#[inline]
#[target_feature(enable = "sse2")]
unsafe fn specials16_sse2(chunk: &[u8; 16]) -> u32 {
    use std::arch::x86_64::{
        __m128i, _mm_cmpeq_epi8, _mm_loadu_si128, _mm_movemask_epi8, _mm_or_si128, _mm_set1_epi8,
    };
    // SAFETY: `chunk` is 16 bytes: one unaligned 16-byte load stays inside it.
    let v = unsafe { _mm_loadu_si128(chunk.as_ptr() as *const __m128i) };
    let q = _mm_cmpeq_epi8(v, _mm_set1_epi8(b'"' as i8));
    let b = _mm_cmpeq_epi8(v, _mm_set1_epi8(b'\\' as i8));
    _mm_movemask_epi8(_mm_or_si128(q, b)) as u32
}

#[cfg(not(all(target_arch = "x86_64", target_feature = "sse2")))]
#[inline(always)]
fn specials16(chunk: &[u8; 16]) -> u32 {
    specials16_portable(chunk)
}

/// Portable [`specials16`] (the fallback, and the reference in tests).
#[cfg(any(test, not(all(target_arch = "x86_64", target_feature = "sse2"))))]
fn specials16_portable(chunk: &[u8; 16]) -> u32 {
    let mut m = 0u32;
    for (k, &c) in chunk.iter().enumerate() {
        m |= ((c == b'"' || c == b'\\') as u32) << k;
    }
    m
}

#[cfg(test)]
mod tests {
    use super::super::{scan_object, CompactScanner, Member, ScanError};
    use super::*;
    use proptest::prelude::*;

    /// Learn the shape of `line` with the compact scanner (tag = member index).
    fn learn(line: &str) -> Shape<usize> {
        let mut shape = Shape::EMPTY;
        shape.start_learning();
        let mut ok = false;
        if let Ok(mut sc) = CompactScanner::new(line.as_bytes()) {
            let mut i = 0;
            ok = loop {
                match sc.next_key() {
                    Ok(Some(k)) => {
                        shape.learn_key(k, Some(i));
                        i += 1;
                        if sc.skip_value().is_err() {
                            break false;
                        }
                    }
                    Ok(None) => break true,
                    Err(_) => break false,
                }
            };
        }
        shape.finish_learning(ok);
        shape
    }

    fn walked<'a>(shape: &mut Shape<usize>, line: &'a str) -> Result<Vec<Value<'a>>, Miss> {
        let mut out = Vec::new();
        shape.walk(line.as_bytes(), |i, v| {
            assert_eq!(i, out.len());
            out.push(v);
            Ok(())
        })?;
        Ok(out)
    }

    fn general(line: &str) -> Result<Vec<Member<'_>>, ScanError> {
        let mut out = Vec::new();
        scan_object(line.as_bytes(), |m| {
            out.push(m);
            Ok::<(), ScanError>(())
        })?;
        Ok(out)
    }

    fn general_values(line: &str) -> Vec<Value<'_>> {
        general(line).unwrap().iter().map(|m| m.value).collect()
    }

    fn states(shape: &Shape<usize>) -> Vec<State> {
        shape.entries[..shape.n].iter().map(|e| e.state).collect()
    }

    const LINE: &str = r#"{"start_time":"2026-11-26T05:06:07.130Z","response_code":200,"upstream_transport_failure_reason":null,"flag":true,"duration":4.5,"path":"/a/very/long/path/that/spans/more/than/one/chunk/of/sixteen"}"#;

    #[test]
    fn walks_the_learned_shape_and_misses_others() {
        let mut shape = learn(LINE);
        // First walk: values read, and made templates where they fit.
        assert!(states(&shape).iter().all(|s| *s == State::Fresh));
        assert_eq!(walked(&mut shape, LINE).unwrap(), general_values(LINE));
        use State::{Num, Str, Template};
        assert_eq!(
            states(&shape),
            [Template, Template, Template, Template, Template, Str]
        );
        // Again, from the templates.
        assert_eq!(walked(&mut shape, LINE).unwrap(), general_values(LINE));
        // Other values, same keys: walked; the templates that failed stay for a while
        // (a rare value), then give way when the misses keep coming.
        let other = LINE.replace("200", "503").replace("4.5", "12");
        assert_eq!(walked(&mut shape, &other).unwrap(), general_values(&other));
        assert_eq!(walked(&mut shape, &other).unwrap()[1], Value::Num(b"503"));
        assert_eq!(
            states(&shape),
            [Template, Template, Template, Template, Template, Str]
        );
        for _ in 0..6 {
            assert_eq!(walked(&mut shape, &other).unwrap(), general_values(&other));
        }
        assert_eq!(
            states(&shape),
            [Template, Num, Template, Template, Num, Str]
        );
        // A number member holding something else, then a number again.
        let null_code = other.replace(":503,", ":null,");
        for line in [&null_code, &other, &null_code] {
            assert_eq!(walked(&mut shape, line).unwrap(), general_values(line));
        }
        assert_eq!(states(&shape)[1], Num);
        // A number that starts like the template's is not taken for it.
        let mut shape = learn(LINE);
        walked(&mut shape, LINE).unwrap();
        let longer = LINE.replace(":200,", ":2001,");
        assert_eq!(
            walked(&mut shape, &longer).unwrap(),
            general_values(&longer)
        );
        assert_eq!(walked(&mut shape, &longer).unwrap()[1], Value::Num(b"2001"));
        // A template string that is a prefix of the value: not taken either.
        let mut shape = learn(LINE);
        walked(&mut shape, LINE).unwrap();
        let later = LINE.replace(".130Z", ".130Z+");
        assert_eq!(walked(&mut shape, &later).unwrap(), general_values(&later));
        // A string member holding null; a null member holding a string.
        let swapped = LINE
            .replace(
                r#""/a/very/long/path/that/spans/more/than/one/chunk/of/sixteen""#,
                "null",
            )
            .replace(":null,", r#":"n","#);
        let mut shape = learn(LINE);
        walked(&mut shape, LINE).unwrap();
        for _ in 0..2 {
            assert_eq!(
                walked(&mut shape, &swapped).unwrap(),
                general_values(&swapped)
            );
            assert_eq!(walked(&mut shape, LINE).unwrap(), general_values(LINE));
        }
        // The `null` template missed on half of the lines: kept (a literal template
        // pays up to that rate).
        assert_eq!(
            states(&shape),
            [Template, Template, Template, Template, Template, Str]
        );
        // Strings from now on: it makes way for the string's quote.
        for _ in 0..20 {
            assert_eq!(
                walked(&mut shape, &swapped).unwrap(),
                general_values(&swapped)
            );
        }
        assert_eq!(
            states(&shape),
            [Template, Template, Str, Template, Template, Str]
        );
        // Trailing whitespace is fine, anything else is not.
        for shape in [&mut learn(LINE), &mut shape] {
            assert!(walked(shape, &format!("{LINE} \r\n")).is_ok());
            for bad in [
                format!("{LINE}x"),
                format!(" {LINE}"),
                LINE.replace("\"flag\"", "\"flog\""),
                LINE.replace("/long/", "/lo\\\"ng/"),
                LINE.replace("4.5", "4."),
                LINE.replace("true", "tru"),
                LINE.replace(":200,", ":200 ,"),
                LINE.replace(":null", ":{}"),
                LINE[..LINE.len() - 1].to_string(),
            ] {
                assert_eq!(walked(shape, &bad), Err(Miss), "{bad}");
            }
        }
        // Nothing learned: every line misses.
        let mut empty = Shape::EMPTY;
        assert_eq!(walked(&mut empty, LINE), Err(Miss));
        // Lines shorter than `KEY_CAP` are not walked.
        let short = r#"{"a":1,"b":"x"}"#;
        assert_eq!(walked(&mut learn(short), short), Err(Miss));
    }

    #[test]
    fn members_without_template_relearn_one() {
        let mut shape = learn(LINE);
        let other = LINE.replace(":200,", ":503,");
        // Learned from a rare value, the template keeps missing and gives way.
        assert_eq!(walked(&mut shape, &other).unwrap(), general_values(&other));
        for _ in 0..30 {
            assert_eq!(walked(&mut shape, LINE).unwrap(), general_values(LINE));
        }
        assert_eq!(states(&shape)[1], State::Num);
        // Until the next relearning: then the common value becomes the template.
        while shape.walks % RELEARN_WALKS != RELEARN_WALKS - 1 {
            assert_eq!(walked(&mut shape, LINE).unwrap(), general_values(LINE));
        }
        assert_eq!(states(&shape)[1], State::Num);
        assert_eq!(walked(&mut shape, LINE).unwrap(), general_values(LINE));
        assert_eq!(states(&shape)[1], State::Template);
        // Values still come out right on every kind of line after relearning.
        for line in [&other, LINE, &other.replace(":503,", ":null,")] {
            assert_eq!(walked(&mut shape, line).unwrap(), general_values(line));
        }
        // The walk counter wraps without harm.
        shape.walks = u32::MAX - 1;
        for _ in 0..3 {
            assert_eq!(walked(&mut shape, &other).unwrap(), general_values(&other));
        }
    }

    #[test]
    fn unlearnable_shapes_are_forgotten() {
        let long_key = format!(r#"{{"{}":1}}"#, "k".repeat(KEY_CAP));
        assert_eq!(learn(&long_key).n, 0);
        let many: Vec<String> = (0..=MAX_MEMBERS).map(|i| format!("\"k{i}\":{i}")).collect();
        let many = format!("{{{}}}", many.join(","));
        assert_eq!(learn(&many).n, 0);
        assert_eq!(learn(r#"{"a":1,"b":"x\"y"}"#).n, 0);
        assert_eq!(learn(r#"{"a":1,"#).n, 0);
        // At the limits: learned (and no room for a template).
        let fits = format!(r#"{{"{}":1}}"#, "k".repeat(KEY_CAP - 4));
        assert_eq!(learn(&fits).n, 1);
        let mut shape = learn(&fits);
        for _ in 0..2 {
            assert_eq!(walked(&mut shape, &fits).unwrap(), general_values(&fits));
        }
        assert_eq!(states(&shape), [State::Num]);
    }

    #[test]
    fn eq_bits_of_every_byte_position() {
        let a = [7u8; KEY_CAP];
        let row = Row(a);
        assert_eq!(eq_bits(&a, &row, false), low_bits(32));
        assert_eq!(eq_bits(&a, &row, true), low_bits(48));
        for p in 0..KEY_CAP {
            let mut b = a;
            b[p] = 8;
            for wide in [false, true] {
                let all = if wide { low_bits(48) } else { low_bits(32) };
                assert_eq!(eq_bits(&b, &row, wide), all & !(1 << p), "{p}");
                assert_eq!(eq_bits_portable(&b, &row, wide), all & !(1 << p));
            }
        }
    }

    #[test]
    fn first_special_of_every_position() {
        for len in 0..70 {
            for p in 0..=len {
                for c in [b'"', b'\\'] {
                    let mut line = vec![b'a'; len];
                    if p < len {
                        line[p] = c;
                    }
                    for from in 0..=len + 1 {
                        let want = (p < len && from <= p).then_some(p);
                        assert_eq!(first_special(&line, from), want, "{len} {p} {from}");
                        #[cfg(target_arch = "x86_64")]
                        if let Some(t) = Avx2::detect() {
                            assert_eq!(t.first_special(&line, from), want, "{len} {p} {from}");
                        }
                    }
                }
            }
        }
    }

    /// Edit `LINE`: replace (0), insert (1) or cut (2) at `pos`.
    fn edited(pos: usize, byte: u8, edit: u8) -> Vec<u8> {
        let mut bytes = LINE.as_bytes().to_vec();
        let p = pos % bytes.len();
        match edit {
            0 => bytes[p] = byte,
            1 => bytes.insert(p, byte),
            _ => bytes.truncate(p),
        }
        bytes
    }

    proptest! {
        #[test]
        fn simd_eq_bits_agree_with_portable(
            a in proptest::collection::vec(prop_oneof![Just(b'"'), Just(b'\\'), Just(b'a'), any::<u8>()], KEY_CAP),
            b in proptest::collection::vec(prop_oneof![Just(b'"'), Just(b'\\'), Just(b'a'), any::<u8>()], KEY_CAP),
        ) {
            let a: [u8; KEY_CAP] = a.try_into().unwrap();
            let row = Row(b.clone().try_into().unwrap());
            for wide in [false, true] {
                prop_assert_eq!(eq_bits(&a, &row, wide), eq_bits_portable(&a, &row, wide));
            }
            let c: [u8; 16] = a[..16].try_into().unwrap();
            prop_assert_eq!(specials16(&c), specials16_portable(&c));
        }

        #[test]
        fn tail_eq_bits_agree_with_a_scan(
            s in proptest::collection::vec(prop_oneof![Just(b'a'), Just(b'b'), Just(0u8)], KEY_CAP..100),
            row in proptest::collection::vec(prop_oneof![Just(b'a'), Just(b'b'), Just(0u8)], KEY_CAP),
            back in 0usize..=KEY_CAP,
        ) {
            let row = Row(row.try_into().unwrap());
            let pos = s.len() - back;
            let want = (0..KEY_CAP)
                .filter(|&k| s.get(pos + k) == Some(&row.0[k]))
                .fold(0u64, |bits, k| bits | 1 << k);
            prop_assert_eq!(tail_eq_bits(&s, pos, &row), want);
        }

        #[test]
        fn first_special_agrees_with_a_scan(
            line in proptest::collection::vec(prop_oneof![Just(b'"'), Just(b'\\'), any::<u8>()], 0..140),
            from in 0usize..110,
        ) {
            let want = line.iter().skip(from).position(|&c| c == b'"' || c == b'\\').map(|p| p + from);
            prop_assert_eq!(first_special(&line, from), want);
            #[cfg(target_arch = "x86_64")]
            if let Some(t) = Avx2::detect() {
                prop_assert_eq!(t.first_special(&line, from), want);
            }
        }

        /// On any edit of a line of the learned shape, walked from any state the shape
        /// can be in, a walk that succeeds yields exactly the members' values the
        /// general scanner reads; and the original line still walks afterwards.
        #[test]
        fn walk_agrees_with_general(
            pos in 0usize..1000,
            byte in prop_oneof![Just(b' '), Just(b'\\'), Just(b'"'), Just(b','), Just(b'}'), Just(b'{'), Just(b'0'), Just(b':'), any::<u8>()],
            edit in 0u8..3,
            before in proptest::collection::vec((0usize..1000, any::<u8>(), 0u8..3), 0..3),
        ) {
            let mut shape = learn(LINE);
            for (p, b, e) in before {
                if let Ok(line) = std::str::from_utf8(&edited(p, b, e)) {
                    let _ = walked(&mut shape, line);
                }
            }
            if let Ok(line) = std::str::from_utf8(&edited(pos, byte, edit)) {
                if let Ok(values) = walked(&mut shape, line) {
                    prop_assert_eq!(values, general_values(line));
                }
            }
            prop_assert_eq!(walked(&mut shape, LINE), Ok(general_values(LINE)));
        }

        /// Random objects: each walks under its own learned shape as the general scanner
        /// reads it, also after lines with other values of the same keys; cuts never
        /// walk.
        #[test]
        fn walk_agrees_on_valid_objects(
            keys in proptest::collection::vec("[a-z_]{1,50}", 1..8),
            lines in proptest::collection::vec(proptest::collection::vec(r#"("[ -!#-\[\]-~]{0,70}"|-?[1-9][0-9]{0,5}(\.[0-9]{1,3})?|0|true|false|null)"#, 8), 1..4),
            cut in any::<prop::sample::Index>(),
        ) {
            let lines: Vec<String> = lines.iter().map(|vals| {
                let body: Vec<String> = keys.iter().zip(vals.iter()).map(|(k, v)| format!("\"{k}\":{v}")).collect();
                format!("{{{}}}", body.join(","))
            }).collect();
            let mut shape = learn(&lines[0]);
            let fits = keys.iter().all(|k| k.len() + 4 <= KEY_CAP);
            for line in lines.iter().chain(&lines) {
                if fits && line.len() >= KEY_CAP {
                    prop_assert_eq!(walked(&mut shape, line), Ok(general_values(line)));
                } else {
                    prop_assert_eq!(walked(&mut shape, line), Err(Miss));
                }
                let cut = cut.index(line.len());
                prop_assert_eq!(walked(&mut shape, &line[..cut]), Err(Miss));
            }
        }

        /// Long streams where each member takes one of a few values (templates hit,
        /// miss, give way and are relearned, from any point of the walk counter): every
        /// line walks as the general scanner reads it.
        #[test]
        fn walk_agrees_over_streams_of_repeating_values(
            keys in proptest::collection::vec("[a-z_]{1,20}", 2..6),
            choices in proptest::collection::vec(proptest::collection::vec(r#"("[ -!#-\[\]-~]{0,30}"|-?[1-9][0-9]{0,5}|0|true|null)"#, 3), 6),
            picks in proptest::collection::vec(proptest::collection::vec(0usize..3, 6), 1..120),
            start in any::<u32>(),
        ) {
            let lines: Vec<String> = picks.iter().map(|p| {
                let body: Vec<String> = keys.iter().enumerate()
                    .map(|(i, k)| format!("\"{k}\":{}", choices[i][p[i]]))
                    .collect();
                format!("{{\"pad\":\"{}\",{}}}", "p".repeat(KEY_CAP), body.join(","))
            }).collect();
            let mut shape = learn(&lines[0]);
            shape.walks = start;
            for _ in 0..3 {
                for line in &lines {
                    prop_assert_eq!(walked(&mut shape, line), Ok(general_values(line)));
                }
            }
        }

        #[test]
        fn arbitrary_text_never_panics(line in ".{0,300}") {
            let mut shape = learn(LINE);
            let _ = walked(&mut shape, &line);
            let _ = walked(&mut shape, LINE);
            let _ = walked(&mut shape, &line);
        }
    }
}
