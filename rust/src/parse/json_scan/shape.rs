//! The member layout ("shape") of compact JSON lines, learned from one line and checked
//! on the next ones.
//!
//! One Envoy writes every access-log line with the same keys in the same order (the
//! order of its `json_format` map); only the values change. A [`Shape`] remembers the
//! exact bytes between the values of such a line (`{"start_time":`, `,"route_name":`,
//! ..., and the closing `}`) and, for each member, a caller tag (which field it is, or
//! none). [`Shape::walk`] then reads a line by comparing those bytes at once (SSE2, up to 48
//! bytes per member) and looking only for where each value ends: no key is searched for,
//! none is matched by name, and values of keys nobody reads are not built.
//!
//! Safety net: whatever `walk` accepts is a compact, escape-free JSON object whose members
//! are exactly the learned keys, in order, with scalar or string values (every byte of
//! it checked: key bytes compared, strings searched to their end for `"` and `\`,
//! numbers by the JSON grammar, literals exactly, only whitespace after `}`); the
//! general [`super::ObjectScanner`] reads such a line as the same members. Anything else,
//! including a line whose layout differs from the learned one, is a [`Miss`]: the caller
//! then reads the line another way (and usually learns its shape).

use super::{scan_number, skip_ws, Value};

/// Most members a learned shape holds (a line with more is never walked by a shape).
pub const MAX_MEMBERS: usize = 40;

/// Room for the bytes before one value: `{"` or `,"`, the key, `":`. A key longer than
/// `KEY_CAP - 4` bytes makes the line's shape unlearnable.
const KEY_CAP: usize = 48;

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

/// The bytes before one member's value, and the caller's tag for the member.
#[derive(Debug, Clone, Copy)]
struct Entry<T> {
    /// `{"key":` for the first member, `,"key":` for the others; zero-padded.
    bytes: Row,
    /// 0xff for each of the meaningful bytes of `bytes`, 0 for the padding.
    mask: Row,
    /// Number of meaningful bytes in `bytes`.
    len: usize,
    /// 16-byte chunks of `bytes` to compare (1 to 3).
    chunks: usize,
    tag: Option<T>,
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
}

impl<T: Copy> Shape<T> {
    /// Nothing learned.
    pub const EMPTY: Shape<T> = Shape {
        entries: [Entry {
            bytes: Row([0; KEY_CAP]),
            mask: Row([0; KEY_CAP]),
            len: 0,
            chunks: 0,
            tag: None,
        }; MAX_MEMBERS],
        n: 0,
        learning: false,
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
        match self.entries.get_mut(self.n) {
            Some(e) if len <= KEY_CAP => {
                e.bytes = Row([0; KEY_CAP]);
                e.bytes.0[0] = if first { b'{' } else { b',' };
                e.bytes.0[1] = b'"';
                if let Some(dst) = e.bytes.0.get_mut(2..2 + key.len()) {
                    dst.copy_from_slice(key);
                }
                e.bytes.0[len - 2] = b'"';
                e.bytes.0[len - 1] = b':';
                e.mask = Row([0; KEY_CAP]);
                if let Some(m) = e.mask.0.get_mut(..len) {
                    m.fill(0xff);
                }
                e.len = len;
                e.chunks = len.div_ceil(16);
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
        self.learning = false;
    }

    /// A walk over `s` as a line of the learned shape: see [`Walk::next_tagged`].
    #[inline(always)]
    pub fn walk<'s, 'a>(&'s self, s: &'a [u8]) -> Walk<'s, 'a, T> {
        // A line shorter than `KEY_CAP` (never an access-log line) walks no entry, so
        // misses; the others have a `last_window`.
        let (entries, last_window) = match s.len().checked_sub(KEY_CAP) {
            Some(last) => (self.entries.get(..self.n).unwrap_or(&[]), last),
            None => (&[][..], 0),
        };
        Walk {
            entries: entries.iter(),
            s,
            pos: 0,
            last_window,
        }
    }
}

/// A walk over one line with a learned [`Shape`].
pub struct Walk<'s, 'a, T> {
    entries: std::slice::Iter<'s, Entry<T>>,
    s: &'a [u8],
    /// Where the next entry's bytes must be (after the previous value).
    pos: usize,
    /// `s.len() - KEY_CAP` (set once by [`Shape::walk`], which walks no entry when `s`
    /// is shorter): the last start of a `KEY_CAP`-byte window inside `s`.
    last_window: usize,
}

impl<'a, T: Copy> Walk<'_, 'a, T> {
    /// The next member with a tag, as (tag, value), in line order; `Ok(None)` once the
    /// whole line has been checked (closing `}`, then only whitespace); [`Miss`] when
    /// the line does not have the shape.
    #[inline(always)]
    pub fn next_tagged(&mut self) -> Result<Option<(T, Value<'a>)>, Miss> {
        let s = self.s;
        while let Some(e) = self.entries.next() {
            if !self.bytes_at(self.pos, e) {
                return Err(Miss);
            }
            let v = self.pos + e.len;
            let after = value_end(s, v)?;
            self.pos = after;
            if let Some(tag) = e.tag {
                return Ok(Some((tag, value_of(s, v, after)?)));
            }
        }
        // `pos` 0: nothing was learned (a lone `}` is no object).
        if self.pos != 0 && s.get(self.pos) == Some(&b'}') && skip_ws(s, self.pos + 1) == s.len() {
            Ok(None)
        } else {
            Err(Miss)
        }
    }

    /// `s[pos..]` starts with the entry's bytes.
    #[inline(always)]
    fn bytes_at(&self, pos: usize, e: &Entry<T>) -> bool {
        let s = self.s;
        if pos <= self.last_window {
            // SAFETY: `last_window` is `s.len() - KEY_CAP` (see the field), so
            // `pos + KEY_CAP <= s.len()`: the array is inside `s` (and `u8` has no
            // alignment). Built by hand because `s.get(pos..)` + `first_chunk` cost
            // seven instructions of checks per member on the hot path.
            let window = unsafe { &*(s.as_ptr().add(pos) as *const [u8; KEY_CAP]) };
            masked_eq(window, &e.mask, &e.bytes, e.chunks)
        } else {
            // The last few members of a line: compare the slices.
            s.get(pos..pos + e.len) == e.bytes.0.get(..e.len)
        }
    }
}

/// The index after the value at `v`: a string without escapes or a scalar.
#[inline(always)]
fn value_end(s: &[u8], v: usize) -> Result<usize, Miss> {
    let first = *s.get(v).ok_or(Miss)?;
    // Most values are strings: one test for those before the others.
    if first == b'"' {
        let end = first_special(s, v + 1).ok_or(Miss)?;
        return match s.get(end) {
            Some(b'"') => Ok(end + 1),
            _ => Err(Miss),
        };
    }
    scalar_end(s, v)
}

/// The index after the scalar value at `v`.
#[inline(always)]
fn scalar_end(s: &[u8], v: usize) -> Result<usize, Miss> {
    match s.get(v) {
        Some(b'-' | b'0'..=b'9') => scan_number(s, v).map_err(|_| Miss),
        Some(b'n') if s.get(v..v + 4) == Some(b"null") => Ok(v + 4),
        Some(b't') if s.get(v..v + 4) == Some(b"true") => Ok(v + 4),
        Some(b'f') if s.get(v..v + 5) == Some(b"false") => Ok(v + 5),
        _ => Err(Miss),
    }
}

/// The value from `v` to `after`, as [`value_end`] found it.
#[inline(always)]
fn value_of(s: &[u8], v: usize, after: usize) -> Result<Value<'_>, Miss> {
    Ok(match s.get(v) {
        Some(b'"') => Value::Str {
            raw: s.get(v + 1..after.wrapping_sub(1)).ok_or(Miss)?,
            escaped: false,
        },
        Some(b'n') => Value::Null,
        Some(b't') => Value::Bool(true),
        Some(b'f') => Value::Bool(false),
        _ => Value::Num(s.get(v..after).ok_or(Miss)?),
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

/// `window[k] & mask[k] == bytes[k]` for every k below `16 * chunks` (`mask` is zero
/// past the bytes that matter, so the result does not depend on `chunks` as long as
/// it covers them).
#[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
#[inline(always)]
fn masked_eq(window: &[u8; KEY_CAP], mask: &Row, bytes: &Row, chunks: usize) -> bool {
    // SAFETY: `masked_eq_sse2` only requires SSE2, which this cfg guarantees is enabled
    // at compile time (x86_64 baseline); it reads only inside its three arrays.
    unsafe { masked_eq_sse2(window, mask, bytes, chunks) }
}

#[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
#[inline]
#[target_feature(enable = "sse2")]
unsafe fn masked_eq_sse2(window: &[u8; KEY_CAP], mask: &Row, bytes: &Row, chunks: usize) -> bool {
    use std::arch::x86_64::{
        __m128i, _mm_and_si128, _mm_cmpeq_epi8, _mm_load_si128, _mm_loadu_si128, _mm_movemask_epi8,
        _mm_or_si128, _mm_setzero_si128, _mm_xor_si128,
    };
    let (w, m, b) = (
        window.as_ptr() as *const __m128i,
        mask.0.as_ptr() as *const __m128i,
        bytes.0.as_ptr() as *const __m128i,
    );
    // The bytes that differ (under the mask), per chunk.
    let diff = |k: usize| {
        // SAFETY: the three arrays are 48 bytes, so 16-byte loads at offsets 0, 16 and 32
        // (k = 0, 1, 2) stay inside them; `mask` and `bytes` are `Row`s, 16-byte aligned,
        // so the aligned loads are too.
        let (w, m, b) = unsafe {
            (
                _mm_loadu_si128(w.add(k)),
                _mm_load_si128(m.add(k)),
                _mm_load_si128(b.add(k)),
            )
        };
        _mm_xor_si128(_mm_and_si128(w, m), b)
    };
    let mut any = diff(0);
    if chunks > 1 {
        any = _mm_or_si128(any, diff(1));
        if chunks > 2 {
            any = _mm_or_si128(any, diff(2));
        }
    }
    _mm_movemask_epi8(_mm_cmpeq_epi8(any, _mm_setzero_si128())) == 0xffff
}

#[cfg(not(all(target_arch = "x86_64", target_feature = "sse2")))]
#[inline(always)]
fn masked_eq(window: &[u8; KEY_CAP], mask: &Row, bytes: &Row, chunks: usize) -> bool {
    masked_eq_portable(window, mask, bytes, chunks)
}

/// Portable [`masked_eq`] (the fallback, and the reference in tests).
#[cfg(any(test, not(all(target_arch = "x86_64", target_feature = "sse2"))))]
fn masked_eq_portable(window: &[u8; KEY_CAP], mask: &Row, bytes: &Row, chunks: usize) -> bool {
    window
        .iter()
        .zip(&mask.0)
        .zip(&bytes.0)
        .take(16 * chunks)
        .all(|((w, m), b)| w & m == *b)
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

    fn walked<'a>(shape: &Shape<usize>, line: &'a str) -> Result<Vec<Value<'a>>, Miss> {
        let mut out = Vec::new();
        let mut walk = shape.walk(line.as_bytes());
        while let Some((i, v)) = walk.next_tagged()? {
            assert_eq!(i, out.len());
            out.push(v);
        }
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

    const LINE: &str = r#"{"start_time":"2026-11-26T05:06:07.130Z","response_code":200,"upstream_transport_failure_reason":null,"flag":true,"duration":4.5,"path":"/a/very/long/path/that/spans/more/than/one/chunk/of/sixteen"}"#;

    #[test]
    fn walks_the_learned_shape_and_misses_others() {
        let shape = learn(LINE);
        let values = walked(&shape, LINE).unwrap();
        let members = general(LINE).unwrap();
        assert_eq!(values, members.iter().map(|m| m.value).collect::<Vec<_>>());
        // Other values, same keys: walked.
        let other = LINE.replace("200", "503").replace("4.5", "12");
        assert_eq!(walked(&shape, &other).unwrap()[1], Value::Num(b"503"));
        // Trailing whitespace is fine, anything else is not.
        assert!(walked(&shape, &format!("{LINE} \r\n")).is_ok());
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
            assert_eq!(walked(&shape, &bad), Err(Miss), "{bad}");
        }
        // Nothing learned: every line misses.
        assert_eq!(walked(&Shape::EMPTY, LINE), Err(Miss));
        // Lines shorter than `KEY_CAP` are not walked.
        let short = r#"{"a":1,"b":"x"}"#;
        assert_eq!(walked(&learn(short), short), Err(Miss));
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
        // At the limits: learned.
        let fits = format!(r#"{{"{}":1}}"#, "k".repeat(KEY_CAP - 4));
        assert_eq!(learn(&fits).n, 1);
        assert!(walked(&learn(&fits), &fits).is_ok());
    }

    #[test]
    fn masks_of_every_byte_position() {
        let a = [7u8; KEY_CAP];
        for len in 0..=KEY_CAP {
            let mut mask = [0u8; KEY_CAP];
            mask[..len].fill(0xff);
            let mut bytes = [0u8; KEY_CAP];
            bytes[..len].fill(7);
            let chunks = len.div_ceil(16).max(1);
            let (mask, bytes) = (Row(mask), Row(bytes));
            assert!(masked_eq(&a, &mask, &bytes, chunks));
            for p in 0..KEY_CAP {
                let mut b = a;
                b[p] = 8;
                assert_eq!(masked_eq(&b, &mask, &bytes, chunks), p >= len, "{len} {p}");
                assert_eq!(masked_eq(&b, &mask, &bytes, 3), p >= len, "{len} {p}");
                assert_eq!(masked_eq_portable(&b, &mask, &bytes, chunks), p >= len);
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
                    }
                }
            }
        }
    }

    proptest! {
        #[test]
        fn simd_masks_agree_with_portable(
            a in proptest::collection::vec(prop_oneof![Just(b'"'), Just(b'\\'), any::<u8>()], KEY_CAP),
            b in proptest::collection::vec(prop_oneof![Just(b'"'), Just(b'\\'), any::<u8>()], KEY_CAP),
        ) {
            let a: [u8; KEY_CAP] = a.try_into().unwrap();
            let b: [u8; KEY_CAP] = b.try_into().unwrap();
            let len = (a[0] as usize) % (KEY_CAP + 1);
            let mut mask = [0u8; KEY_CAP];
            mask[..len].fill(0xff);
            let mut bytes = [0u8; KEY_CAP];
            bytes[..len].copy_from_slice(&b[..len]);
            let (mask, bytes) = (Row(mask), Row(bytes));
            for chunks in len.div_ceil(16).max(1)..=3 {
                prop_assert_eq!(masked_eq(&a, &mask, &bytes, chunks), masked_eq_portable(&a, &mask, &bytes, chunks));
                prop_assert_eq!(masked_eq(&a, &mask, &bytes, chunks), a[..len] == b[..len]);
            }
            // Equal on the first `len` bytes: always a match.
            let mut same = a;
            same[..len].copy_from_slice(&b[..len]);
            prop_assert!(masked_eq(&same, &mask, &bytes, 3));
            let c: [u8; 16] = a[..16].try_into().unwrap();
            prop_assert_eq!(specials16(&c), specials16_portable(&c));
        }

        #[test]
        fn first_special_agrees_with_a_scan(
            line in proptest::collection::vec(prop_oneof![Just(b'"'), Just(b'\\'), any::<u8>()], 0..100),
            from in 0usize..110,
        ) {
            let want = line.iter().skip(from).position(|&c| c == b'"' || c == b'\\').map(|p| p + from);
            prop_assert_eq!(first_special(&line, from), want);
        }

        /// On any edit of a line of the learned shape, a walk that succeeds yields exactly
        /// the members' values the general scanner reads.
        #[test]
        fn walk_agrees_with_general(
            pos in 0usize..1000,
            byte in prop_oneof![Just(b' '), Just(b'\\'), Just(b'"'), Just(b','), Just(b'}'), Just(b'{'), Just(b'0'), Just(b':'), any::<u8>()],
            edit in 0u8..3,
        ) {
            let shape = learn(LINE);
            let mut bytes = LINE.as_bytes().to_vec();
            let p = pos % bytes.len();
            match edit {
                0 => bytes[p] = byte,
                1 => bytes.insert(p, byte),
                _ => bytes.truncate(p),
            }
            if let Ok(line) = std::str::from_utf8(&bytes) {
                if let Ok(values) = walked(&shape, line) {
                    let members = general(line).unwrap();
                    prop_assert_eq!(values, members.iter().map(|m| m.value).collect::<Vec<_>>());
                }
            }
        }

        /// Random objects: each walks under its own learned shape as the general scanner
        /// reads it; cuts never walk.
        #[test]
        fn walk_agrees_on_valid_objects(
            keys in proptest::collection::vec("[a-z_]{1,50}", 1..8),
            vals in proptest::collection::vec(r#"("[ -!#-\[\]-~]{0,70}"|-?[1-9][0-9]{0,5}(\.[0-9]{1,3})?|true|false|null)"#, 8),
            cut in any::<prop::sample::Index>(),
        ) {
            let body: Vec<String> = keys.iter().zip(vals.iter()).map(|(k, v)| format!("\"{k}\":{v}")).collect();
            let line = format!("{{{}}}", body.join(","));
            let shape = learn(&line);
            let members = general(&line).unwrap();
            if keys.iter().all(|k| k.len() + 4 <= KEY_CAP) && line.len() >= KEY_CAP {
                prop_assert_eq!(walked(&shape, &line), Ok(members.iter().map(|m| m.value).collect::<Vec<_>>()));
            } else {
                prop_assert_eq!(walked(&shape, &line), Err(Miss));
            }
            let cut = cut.index(line.len());
            prop_assert_eq!(walked(&shape, &line[..cut]), Err(Miss));
        }

        #[test]
        fn arbitrary_text_never_panics(line in ".{0,300}") {
            let _ = walked(&learn(LINE), &line);
        }
    }
}
