//! Kafka record batch (magic v2) decoding straight into line buffers.
//!
//! A Fetch response's `records` field holds record batches back to back. Each batch is checked
//! (CRC-32C over attributes..end), decompressed when needed (gzip, snappy incl. the xerial framing
//! the Java client writes, lz4 frame, zstd), and its record values appended to one buffer per
//! `(target, version)` pair: a newline after a value that does not end with one, so every buffer
//! holds complete lines. Nothing here panics on any input: a bad batch is counted and skipped.

use std::io::Read;
use std::sync::{Arc, Mutex};

use memchr::memmem;

/// Bytes of a v2 batch header, from `baseOffset` to the record count inclusive.
pub const BATCH_HEADER_LEN: usize = 61;
/// Offset of `attributes`, where the CRC-32C starts.
const CRC_START: usize = 21;

/// Why a batch or record was skipped (names end up in `SourceStats.malformed`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Skip {
    /// The batch's CRC-32C does not match its bytes.
    CrcMismatch,
    /// A batch whose header or records do not parse (lengths past the end, bad varints).
    CorruptBatch,
    /// A compression codec that is not gzip, snappy, lz4 or zstd, or data that does not decompress.
    BadCompression,
    /// A message format older than v2 (magic 0/1; Kafka 4 no longer serves them).
    UnsupportedMagic,
    /// A record value larger than `max_record_bytes` (skipped before the core).
    RecordTooLarge,
}

impl Skip {
    /// The reason's name as counted in the source's stats.
    pub fn name(self) -> &'static str {
        match self {
            Skip::CrcMismatch => "crc_mismatch",
            Skip::CorruptBatch => "corrupt_batch",
            Skip::BadCompression => "bad_compression",
            Skip::UnsupportedMagic => "unsupported_magic",
            Skip::RecordTooLarge => "record_too_large",
        }
    }
}

/// How records become lines.
#[derive(Debug, Clone)]
pub struct DecodeOptions {
    /// Verify each batch's CRC-32C.
    pub check_crcs: bool,
    /// Record values above this size are skipped and counted.
    pub max_record_bytes: usize,
    /// Header names carrying target / version (empty: not looked at).
    pub target_header: Vec<u8>,
    pub version_header: Vec<u8>,
    /// A record key `<target>/<version>` fills in what the headers leave out.
    pub key_attribution: bool,
    /// JSON envelope key (`log`, `message`): the value from that member's string on is kept,
    /// behind `{"log":"`, for the core's Docker-envelope unwrapper.
    pub envelope_key: Option<String>,
}

impl Default for DecodeOptions {
    fn default() -> Self {
        DecodeOptions {
            check_crcs: true,
            max_record_bytes: 4 << 20,
            target_header: b"target".to_vec(),
            version_header: b"version".to_vec(),
            key_attribution: true,
            envelope_key: None,
        }
    }
}

/// A bounded pool of line buffers. The buffers handed to Python come back when Python drops them,
/// so the next fetch writes into memory already mapped: fresh multi-MB allocations are mmapped
/// and cost a page fault and a page clearing per 4 KiB on first write.
#[derive(Debug, Clone)]
pub struct BufferPool {
    free: Arc<Mutex<Vec<Vec<u8>>>>,
    keep: usize,
    max_capacity: usize,
}

impl BufferPool {
    /// Keep at most `keep` idle buffers of at most `max_capacity` bytes each.
    pub fn new(keep: usize, max_capacity: usize) -> Self {
        BufferPool {
            free: Arc::new(Mutex::new(Vec::with_capacity(keep))),
            keep,
            max_capacity,
        }
    }

    /// An empty buffer with room for at least `capacity` bytes (a pooled one when there is one).
    pub fn take(&self, capacity: usize) -> Vec<u8> {
        let pooled = self.free.lock().ok().and_then(|mut free| free.pop());
        match pooled {
            Some(mut buf) => {
                buf.reserve(capacity);
                buf
            }
            None => Vec::with_capacity(capacity),
        }
    }

    /// Return a buffer nobody uses any more (dropped instead when the pool is full or it is
    /// larger than `max_capacity`).
    pub fn give(&self, mut buf: Vec<u8>) {
        if buf.capacity() == 0 || buf.capacity() > self.max_capacity {
            return;
        }
        buf.clear();
        if let Ok(mut free) = self.free.lock() {
            if free.len() < self.keep {
                free.push(buf);
            }
        }
    }

    /// Idle buffers held.
    pub fn idle(&self) -> usize {
        self.free.lock().map(|f| f.len()).unwrap_or(0)
    }
}

impl Default for BufferPool {
    fn default() -> Self {
        BufferPool::new(8, 64 << 20)
    }
}

/// Precomputed searchers for the envelope key.
struct Envelope {
    compact: memmem::Finder<'static>,
    spaced: memmem::Finder<'static>,
}

/// The lines of one `(target, version)` pair.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Group {
    pub target: String,
    pub version: String,
    pub data: Vec<u8>,
    pub records: u64,
}

/// What decoding one partition's records produced.
#[derive(Debug, Default, Clone)]
pub struct PartitionLines {
    /// Groups in first-seen order; records without attribution go to `("", "")`.
    pub groups: Vec<Group>,
    /// The offset to fetch next (past every record consumed or skipped).
    pub next_offset: i64,
    /// Records consumed (handed over or skipped as too large).
    pub records: u64,
    /// Record values' bytes handed over.
    pub value_bytes: u64,
    /// Skipped batches / records per reason.
    pub skipped: Vec<(Skip, u64)>,
    /// The record limit stopped decoding before the end of the data.
    pub limited: bool,
    /// The data ended with a batch cut short by the fetch size (normal: fetched again next time).
    pub partial_tail: bool,
    /// Complete batches seen (0 with `partial_tail`: the fetch size is smaller than one batch).
    pub batches: u64,
}

impl PartitionLines {
    fn skip(&mut self, why: Skip) {
        match self.skipped.iter_mut().find(|(w, _)| *w == why) {
            Some((_, n)) => *n += 1,
            None => self.skipped.push((why, 1)),
        }
    }

    fn group(
        &mut self,
        target: &str,
        version: &str,
        reserve: usize,
        pool: &BufferPool,
    ) -> &mut Group {
        let i = match self
            .groups
            .iter()
            .position(|g| g.target == target && g.version == version)
        {
            Some(i) => i,
            None => {
                // the first group usually takes every record: room for all of them up front
                // spares the copies of a growing buffer
                let data = pool.take(if self.groups.is_empty() { reserve } else { 0 });
                self.groups.push(Group {
                    target: target.to_string(),
                    version: version.to_string(),
                    data,
                    records: 0,
                });
                self.groups.len() - 1
            }
        };
        &mut self.groups[i]
    }
}

/// Decodes record batches with fixed options (the searchers are built once).
pub struct Decoder {
    opts: DecodeOptions,
    envelope: Option<Envelope>,
    scratch: Vec<u8>,
    reserve: usize, // capacity of the first group's buffer in the current decode
    pool: BufferPool,
}

impl Decoder {
    pub fn new(opts: DecodeOptions) -> Self {
        let envelope = opts.envelope_key.as_ref().map(|k| Envelope {
            compact: memmem::Finder::new(format!("\"{k}\":\"").as_bytes()).into_owned(),
            spaced: memmem::Finder::new(format!("\"{k}\": \"").as_bytes()).into_owned(),
        });
        Decoder {
            opts,
            envelope,
            scratch: Vec::new(),
            reserve: 0,
            pool: BufferPool::default(),
        }
    }

    pub fn options(&self) -> &DecodeOptions {
        &self.opts
    }

    /// Where the groups' buffers come from (give them back here once used).
    pub fn pool(&self) -> &BufferPool {
        &self.pool
    }

    /// Decode the record batches of one partition fetched from `fetch_offset`, taking at most
    /// `max_records` records (records before `fetch_offset`, as in a compressed batch fetched
    /// from its middle, are passed over).
    pub fn decode(&mut self, data: &[u8], fetch_offset: i64, max_records: u64) -> PartitionLines {
        let mut out = PartitionLines {
            next_offset: fetch_offset,
            ..PartitionLines::default()
        };
        // values + a newline each fit in the uncompressed records that hold them
        self.reserve = data.len();
        let mut pos = 0usize;
        while pos < data.len() {
            if out.records >= max_records {
                out.limited = true;
                break;
            }
            let rest = &data[pos..];
            if rest.len() < 17 {
                out.partial_tail = true;
                break;
            }
            let base_offset = be_i64(&rest[0..8]);
            let batch_len = be_i32(&rest[8..12]);
            if batch_len < 0 {
                // nothing after this can be framed: count it and leave the rest of the response
                out.skip(Skip::CorruptBatch);
                break;
            }
            let total = 12usize.saturating_add(batch_len as usize);
            if total > rest.len() {
                out.partial_tail = true;
                break;
            }
            out.batches += 1;
            let batch = &rest[..total];
            pos += total;
            if total < 17 {
                // too short to hold a magic byte
                out.skip(Skip::CorruptBatch);
                out.next_offset = out.next_offset.max(base_offset.saturating_add(1));
                continue;
            }
            let magic = batch[16] as i8;
            if magic != 2 {
                out.skip(Skip::UnsupportedMagic);
                // legacy message sets have no last offset delta: step past the base offset
                out.next_offset = out.next_offset.max(base_offset.saturating_add(1));
                continue;
            }
            if batch.len() < BATCH_HEADER_LEN {
                out.skip(Skip::CorruptBatch);
                out.next_offset = out.next_offset.max(base_offset.saturating_add(1));
                continue;
            }
            let last_delta = be_i32(&batch[23..27]);
            let batch_end = if last_delta >= 0 {
                base_offset.saturating_add(last_delta as i64 + 1)
            } else {
                base_offset.saturating_add(1)
            };
            if batch_end <= fetch_offset {
                continue; // wholly before the fetch offset (sent again by the broker)
            }
            if self.opts.check_crcs {
                let expected = be_u32(&batch[17..21]);
                if crc32c::crc32c(&batch[CRC_START..]) != expected {
                    out.skip(Skip::CrcMismatch);
                    out.next_offset = out.next_offset.max(batch_end);
                    continue;
                }
            }
            let attributes = be_i16(&batch[21..23]);
            let is_control = attributes & 0x20 != 0;
            if is_control {
                // transaction markers: no data, but their offsets are consumed
                out.next_offset = out.next_offset.max(batch_end);
                continue;
            }
            let count = be_i32(&batch[57..61]);
            let body = &batch[BATCH_HEADER_LEN..];
            let codec = attributes & 0x07;
            let finished = if codec == 0 {
                self.records(
                    body,
                    count,
                    base_offset,
                    fetch_offset,
                    max_records,
                    &mut out,
                )
            } else {
                let mut scratch = std::mem::take(&mut self.scratch);
                scratch.clear();
                let r = match decompress(codec, body, &mut scratch) {
                    Ok(()) => self.records(
                        &scratch,
                        count,
                        base_offset,
                        fetch_offset,
                        max_records,
                        &mut out,
                    ),
                    Err(why) => {
                        out.skip(why);
                        Ok(true)
                    }
                };
                self.scratch = scratch;
                r
            };
            match finished {
                Ok(true) => out.next_offset = out.next_offset.max(batch_end),
                Ok(false) => {
                    out.limited = true;
                    break;
                }
                Err(()) => {
                    out.skip(Skip::CorruptBatch);
                    out.next_offset = out.next_offset.max(batch_end);
                }
            }
        }
        out
    }

    /// Append the records of one (decompressed) batch. `Ok(false)`: stopped at the record limit
    /// (`out.next_offset` is the first record not taken); `Err`: the records do not parse (what
    /// was taken before stays).
    fn records(
        &self,
        mut buf: &[u8],
        count: i32,
        base_offset: i64,
        fetch_offset: i64,
        max_records: u64,
        out: &mut PartitionLines,
    ) -> Result<bool, ()> {
        if count < 0 {
            return Err(());
        }
        for _ in 0..count {
            let len = read_varint(&mut buf)?;
            if len < 0 || len as usize > buf.len() {
                return Err(());
            }
            let (mut rec, rest) = buf.split_at(len as usize);
            buf = rest;
            let _attributes = take(&mut rec, 1)?;
            let _ts_delta = read_varlong(&mut rec)?;
            let offset_delta = read_varint(&mut rec)?;
            let offset = base_offset.saturating_add(offset_delta as i64);
            let key = read_bytes(&mut rec)?;
            let value = read_bytes(&mut rec)?;
            let headers = read_varint(&mut rec)?;
            if offset < fetch_offset {
                continue;
            }
            if out.records >= max_records {
                out.next_offset = offset;
                return Ok(false);
            }
            out.records += 1;
            out.next_offset = offset + 1;
            let (mut target, mut version) = (String::new(), String::new());
            if headers > 0 {
                self.header_attribution(&mut rec, headers, &mut target, &mut version)?;
            } else if headers < 0 && headers != -1 {
                return Err(());
            }
            if self.opts.key_attribution && (target.is_empty() || version.is_empty()) {
                if let Some(k) = key {
                    if let Some(slash) = memchr::memrchr(b'/', k) {
                        let (t, v) = (&k[..slash], &k[slash + 1..]);
                        if !t.is_empty() && !v.is_empty() {
                            if target.is_empty() {
                                target = String::from_utf8_lossy(t).into_owned();
                            }
                            if version.is_empty() {
                                version = String::from_utf8_lossy(v).into_owned();
                            }
                        }
                    }
                }
            }
            let value = match value {
                Some(v) if !v.is_empty() => v,
                _ => continue,
            };
            if value.len() > self.opts.max_record_bytes {
                out.skip(Skip::RecordTooLarge);
                continue;
            }
            out.value_bytes += value.len() as u64;
            let envelope = self.envelope.as_ref();
            let group = out.group(&target, &version, self.reserve, &self.pool);
            group.records += 1;
            append_value(&mut group.data, value, envelope);
        }
        Ok(true)
    }

    fn header_attribution(
        &self,
        rec: &mut &[u8],
        headers: i32,
        target: &mut String,
        version: &mut String,
    ) -> Result<(), ()> {
        for _ in 0..headers {
            let name = read_bytes(rec)?.ok_or(())?;
            let value = read_bytes(rec)?;
            let Some(value) = value else { continue };
            if !self.opts.target_header.is_empty() && name == self.opts.target_header.as_slice() {
                *target = String::from_utf8_lossy(value).into_owned();
            } else if !self.opts.version_header.is_empty()
                && name == self.opts.version_header.as_slice()
            {
                *version = String::from_utf8_lossy(value).into_owned();
            }
        }
        Ok(())
    }
}

fn append_value(out: &mut Vec<u8>, value: &[u8], envelope: Option<&Envelope>) {
    if let Some(env) = envelope {
        let found = env
            .compact
            .find(value)
            .map(|i| i + env.compact.needle().len())
            .or_else(|| {
                env.spaced
                    .find(value)
                    .map(|i| i + env.spaced.needle().len())
            });
        if let Some(start) = found {
            out.extend_from_slice(b"{\"log\":\"");
            out.extend_from_slice(&value[start..]);
            if !value.ends_with(b"\n") {
                out.push(b'\n');
            }
            return;
        }
    }
    out.extend_from_slice(value);
    if !value.ends_with(b"\n") {
        out.push(b'\n');
    }
}

/// Where a full decode of `data` fetched from `fetch_offset` ends (the next offset to fetch), from
/// the batch headers alone: nothing is decompressed or checked, so the next Fetch can be sent
/// before this one's records are decoded. Equal to [`Decoder::decode`]'s `next_offset` when no
/// record limit stops it and the records agree with their batch headers.
pub fn next_offset_after(data: &[u8], fetch_offset: i64) -> i64 {
    let mut next = fetch_offset;
    let mut pos = 0usize;
    while let Some(rest) = data.get(pos..) {
        if rest.len() < 17 {
            break; // the end, or a partial tail
        }
        let base_offset = be_i64(&rest[0..8]);
        let batch_len = be_i32(&rest[8..12]);
        if batch_len < 0 {
            break;
        }
        let total = 12usize.saturating_add(batch_len as usize);
        if total > rest.len() {
            break;
        }
        pos += total;
        let end = match rest.get(23..27) {
            Some(delta) if total >= BATCH_HEADER_LEN && rest[16] as i8 == 2 => {
                let last_delta = be_i32(delta);
                if last_delta >= 0 {
                    base_offset.saturating_add(last_delta as i64 + 1)
                } else {
                    base_offset.saturating_add(1)
                }
            }
            _ => base_offset.saturating_add(1),
        };
        next = next.max(end);
    }
    next
}

/// Decompress a batch's records section into `out`.
pub fn decompress(codec: i16, data: &[u8], out: &mut Vec<u8>) -> Result<(), Skip> {
    let ok = match codec {
        1 => flate2::read::MultiGzDecoder::new(data)
            .read_to_end(out)
            .is_ok(),
        2 => snappy(data, out).is_ok(),
        3 => lz4_flex::frame::FrameDecoder::new(data)
            .read_to_end(out)
            .is_ok(),
        4 => zstd::stream::read::Decoder::with_buffer(data)
            .and_then(|mut d| d.read_to_end(out))
            .is_ok(),
        _ => false,
    };
    if ok {
        Ok(())
    } else {
        Err(Skip::BadCompression)
    }
}

const XERIAL_MAGIC: &[u8] = b"\x82SNAPPY\x00";

/// Snappy as Kafka writes it: the Java client's xerial framing (a 16-byte header, then blocks of
/// a big-endian length + raw snappy) or, from other clients, one raw snappy block.
fn snappy(data: &[u8], out: &mut Vec<u8>) -> Result<(), ()> {
    let mut dec = snap::raw::Decoder::new();
    let mut raw = |block: &[u8], out: &mut Vec<u8>| -> Result<(), ()> {
        let n = snap::raw::decompress_len(block).map_err(|_| ())?;
        let start = out.len();
        out.resize(start + n, 0);
        let written = dec.decompress(block, &mut out[start..]).map_err(|_| ())?;
        out.truncate(start + written);
        Ok(())
    };
    if data.len() >= 16 && data.starts_with(XERIAL_MAGIC) {
        let mut rest = &data[16..];
        while !rest.is_empty() {
            if rest.len() < 4 {
                return Err(());
            }
            let n = be_u32(&rest[..4]) as usize;
            rest = &rest[4..];
            if n > rest.len() {
                return Err(());
            }
            raw(&rest[..n], out)?;
            rest = &rest[n..];
        }
        Ok(())
    } else {
        raw(data, out)
    }
}

// ------------------------------------------------------------------------- primitive readers

fn be_i64(b: &[u8]) -> i64 {
    i64::from_be_bytes(b[..8].try_into().unwrap_or([0; 8]))
}
fn be_i32(b: &[u8]) -> i32 {
    i32::from_be_bytes(b[..4].try_into().unwrap_or([0; 4]))
}
fn be_u32(b: &[u8]) -> u32 {
    u32::from_be_bytes(b[..4].try_into().unwrap_or([0; 4]))
}
fn be_i16(b: &[u8]) -> i16 {
    i16::from_be_bytes(b[..2].try_into().unwrap_or([0; 2]))
}

fn take<'a>(buf: &mut &'a [u8], n: usize) -> Result<&'a [u8], ()> {
    if buf.len() < n {
        return Err(());
    }
    let (a, b) = buf.split_at(n);
    *buf = b;
    Ok(a)
}

/// Zigzag varint (up to 5 bytes) as in Kafka's record format.
fn read_varint(buf: &mut &[u8]) -> Result<i32, ()> {
    let raw = read_unsigned(buf, 5)?;
    if raw > u32::MAX as u64 {
        return Err(());
    }
    let raw = raw as u32;
    Ok(((raw >> 1) as i32) ^ -((raw & 1) as i32))
}

/// Zigzag varlong (up to 10 bytes).
fn read_varlong(buf: &mut &[u8]) -> Result<i64, ()> {
    let raw = read_unsigned(buf, 10)?;
    Ok(((raw >> 1) as i64) ^ -((raw & 1) as i64))
}

fn read_unsigned(buf: &mut &[u8], max_bytes: usize) -> Result<u64, ()> {
    let mut value = 0u64;
    for i in 0..max_bytes {
        let Some((&b, rest)) = buf.split_first() else {
            return Err(());
        };
        *buf = rest;
        value |= ((b & 0x7f) as u64) << (7 * i);
        if b & 0x80 == 0 {
            return Ok(value);
        }
    }
    Err(())
}

/// A varint length then that many bytes; length -1 is null.
fn read_bytes<'a>(buf: &mut &'a [u8]) -> Result<Option<&'a [u8]>, ()> {
    let len = read_varint(buf)?;
    if len == -1 {
        return Ok(None);
    }
    if len < 0 {
        return Err(());
    }
    take(buf, len as usize).map(Some)
}

#[cfg(test)]
#[path = "batch_tests.rs"]
mod tests;
