use std::io::Write;

use proptest::prelude::*;

use super::*;

/// A record to encode: key, value, headers.
#[derive(Clone, Default)]
pub(crate) struct Rec {
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub headers: Vec<(Vec<u8>, Option<Vec<u8>>)>,
}

pub(crate) fn rec(value: &[u8]) -> Rec {
    Rec {
        value: Some(value.to_vec()),
        ..Rec::default()
    }
}

fn put_varint(out: &mut Vec<u8>, v: i64) {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    loop {
        let b = (z & 0x7f) as u8;
        z >>= 7;
        if z == 0 {
            out.push(b);
            return;
        }
        out.push(b | 0x80);
    }
}

fn put_bytes(out: &mut Vec<u8>, b: Option<&[u8]>) {
    match b {
        None => put_varint(out, -1),
        Some(b) => {
            put_varint(out, b.len() as i64);
            out.extend_from_slice(b);
        }
    }
}

fn compress(codec: i16, raw: &[u8]) -> Vec<u8> {
    match codec {
        0 => raw.to_vec(),
        1 => {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(raw).unwrap();
            e.finish().unwrap()
        }
        2 => snap::raw::Encoder::new().compress_vec(raw).unwrap(),
        3 => {
            let mut e = lz4_flex::frame::FrameEncoder::new(Vec::new());
            e.write_all(raw).unwrap();
            e.finish().unwrap()
        }
        4 => zstd::stream::encode_all(raw, 1).unwrap(),
        _ => raw.to_vec(),
    }
}

/// The xerial framing of the Java client, blocks of at most `block` bytes.
fn xerial(raw: &[u8], block: usize) -> Vec<u8> {
    let mut out = b"\x82SNAPPY\x00\x00\x00\x00\x01\x00\x00\x00\x01".to_vec();
    for chunk in raw.chunks(block) {
        let c = snap::raw::Encoder::new().compress_vec(chunk).unwrap();
        out.extend_from_slice(&(c.len() as u32).to_be_bytes());
        out.extend_from_slice(&c);
    }
    out
}

/// One record batch v2 at `base_offset` (offset deltas 0..n, or `deltas` when given).
pub(crate) fn batch_with(
    base_offset: i64,
    recs: &[Rec],
    codec: i16,
    body: Option<Vec<u8>>,
) -> Vec<u8> {
    let mut raw = Vec::new();
    for (i, r) in recs.iter().enumerate() {
        let mut one = vec![0u8]; // attributes
        put_varint(&mut one, 0); // timestamp delta
        put_varint(&mut one, i as i64); // offset delta
        put_bytes(&mut one, r.key.as_deref());
        put_bytes(&mut one, r.value.as_deref());
        put_varint(&mut one, r.headers.len() as i64);
        for (k, v) in &r.headers {
            put_bytes(&mut one, Some(k));
            put_bytes(&mut one, v.as_deref());
        }
        put_varint(&mut raw, one.len() as i64);
        raw.extend_from_slice(&one);
    }
    let records = body.unwrap_or_else(|| compress(codec, &raw));
    let mut after_crc = Vec::new();
    after_crc.extend_from_slice(&codec.to_be_bytes()); // attributes
    after_crc.extend_from_slice(&((recs.len() as i32 - 1).max(0)).to_be_bytes());
    after_crc.extend_from_slice(&0i64.to_be_bytes()); // base timestamp
    after_crc.extend_from_slice(&0i64.to_be_bytes()); // max timestamp
    after_crc.extend_from_slice(&(-1i64).to_be_bytes()); // producer id
    after_crc.extend_from_slice(&(-1i16).to_be_bytes());
    after_crc.extend_from_slice(&(-1i32).to_be_bytes());
    after_crc.extend_from_slice(&(recs.len() as i32).to_be_bytes());
    after_crc.extend_from_slice(&records);
    let mut out = Vec::new();
    out.extend_from_slice(&base_offset.to_be_bytes());
    out.extend_from_slice(&((after_crc.len() + 9) as i32).to_be_bytes());
    out.extend_from_slice(&0i32.to_be_bytes()); // leader epoch
    out.push(2);
    out.extend_from_slice(&crc32c::crc32c(&after_crc).to_be_bytes());
    out.extend_from_slice(&after_crc);
    out
}

pub(crate) fn batch(base_offset: i64, recs: &[Rec], codec: i16) -> Vec<u8> {
    batch_with(base_offset, recs, codec, None)
}

fn decode(data: &[u8], from: i64) -> PartitionLines {
    Decoder::new(DecodeOptions::default()).decode(data, from, u64::MAX)
}

fn skipped(p: &PartitionLines, why: Skip) -> u64 {
    p.skipped
        .iter()
        .find(|(w, _)| *w == why)
        .map_or(0, |(_, n)| *n)
}

#[test]
fn values_become_complete_lines() {
    let recs = [rec(b"a"), rec(b"b\n"), rec(b"c\nd"), rec(b""), rec(b"e\n")];
    let p = decode(&batch(10, &recs, 0), 10);
    assert_eq!(p.groups.len(), 1);
    assert_eq!(p.groups[0].data, b"a\nb\nc\nd\ne\n");
    assert_eq!((p.next_offset, p.records, p.batches), (15, 5, 1));
    assert!(p.skipped.is_empty() && !p.partial_tail && !p.limited);
}

#[test]
fn every_codec_decodes() {
    let recs: Vec<Rec> = (0..200)
        .map(|i| rec(format!("line {i} {}", "x".repeat(i % 50)).as_bytes()))
        .collect();
    let want: Vec<u8> = recs
        .iter()
        .flat_map(|r| [r.value.clone().unwrap(), b"\n".to_vec()].concat())
        .collect();
    for codec in 0..=4 {
        let p = decode(&batch(0, &recs, codec), 0);
        assert!(p.skipped.is_empty(), "codec {codec}: {:?}", p.skipped);
        assert_eq!(p.groups[0].data, want, "codec {codec}");
        assert_eq!(p.next_offset, 200);
    }
    // snappy in the Java client's xerial framing, several blocks
    let raw_records = {
        // the records section of an uncompressed batch
        let b = batch(0, &recs, 0);
        b[BATCH_HEADER_LEN..].to_vec()
    };
    let p = decode(
        &batch_with(0, &recs, 2, Some(xerial(&raw_records, 1000))),
        0,
    );
    assert!(p.skipped.is_empty(), "{:?}", p.skipped);
    assert_eq!(p.groups[0].data, want);
}

#[test]
fn crc_mismatch_skips_the_batch_only() {
    let mut first = batch(0, &[rec(b"bad1"), rec(b"bad2")], 0);
    let n = first.len();
    first[n - 2] ^= 0x55; // flip a byte inside the records
    let second = batch(2, &[rec(b"good")], 0);
    let p = decode(&[first.clone(), second].concat(), 0);
    assert_eq!(skipped(&p, Skip::CrcMismatch), 1);
    assert_eq!(p.groups[0].data, b"good\n");
    assert_eq!(p.next_offset, 3);
    // without the check the (corrupt) batch is read
    let mut d = Decoder::new(DecodeOptions {
        check_crcs: false,
        ..DecodeOptions::default()
    });
    let p = d.decode(&first, 0, u64::MAX);
    assert_eq!(skipped(&p, Skip::CrcMismatch), 0);
    assert_eq!(p.next_offset, 2);
}

#[test]
fn a_truncated_tail_is_left_for_the_next_fetch() {
    let a = batch(0, &[rec(b"one")], 0);
    let b = batch(1, &[rec(b"two"), rec(b"three")], 0);
    let all = [a.clone(), b.clone()].concat();
    for cut in a.len()..all.len() {
        let p = decode(&all[..cut], 0);
        assert_eq!(p.groups[0].data, b"one\n");
        assert_eq!(p.next_offset, 1);
        assert_eq!(p.partial_tail, cut > a.len(), "cut {cut}");
    }
    // a batch whose records section is cut short inside (lengths lie): corrupt, skipped
    let mut bad = batch(0, &[rec(b"hello world")], 0);
    let len = bad.len();
    bad.truncate(len - 4);
    let fixed_len = (bad.len() - 12) as i32;
    bad[8..12].copy_from_slice(&fixed_len.to_be_bytes());
    let crc = crc32c::crc32c(&bad[21..]);
    bad[17..21].copy_from_slice(&crc.to_be_bytes());
    let p = decode(&bad, 0);
    assert_eq!(skipped(&p, Skip::CorruptBatch), 1);
    assert_eq!(p.next_offset, 1);
    assert!(p.groups.is_empty());
}

#[test]
fn unknown_codec_and_bad_compressed_data_are_counted() {
    let recs = [rec(b"x")];
    let mut p = decode(&batch_with(5, &recs, 5, Some(b"whatever".to_vec())), 5);
    assert_eq!(skipped(&p, Skip::BadCompression), 1);
    assert_eq!(p.next_offset, 6);
    for codec in 1..=4 {
        p = decode(
            &batch_with(5, &recs, codec, Some(b"not compressed at all".to_vec())),
            5,
        );
        assert_eq!(skipped(&p, Skip::BadCompression), 1, "codec {codec}");
        assert_eq!(p.next_offset, 6);
    }
}

#[test]
fn records_before_the_fetch_offset_are_passed_over() {
    let recs: Vec<Rec> = (0..10).map(|i| rec(format!("r{i}").as_bytes())).collect();
    for codec in [0, 4] {
        let p = decode(&batch(100, &recs, codec), 106);
        assert_eq!(p.groups[0].data, b"r6\nr7\nr8\nr9\n");
        assert_eq!((p.next_offset, p.records), (110, 4));
    }
    // a batch wholly before the fetch offset is skipped
    let p = decode(&batch(100, &recs, 0), 110);
    assert!(p.groups.is_empty());
    assert_eq!(p.next_offset, 110);
}

#[test]
fn the_record_limit_stops_mid_batch() {
    let recs: Vec<Rec> = (0..10).map(|i| rec(format!("r{i}").as_bytes())).collect();
    let data = [batch(0, &recs, 0), batch(10, &recs, 0)].concat();
    let mut d = Decoder::new(DecodeOptions::default());
    let p = d.decode(&data, 0, 4);
    assert_eq!((p.records, p.next_offset, p.limited), (4, 4, true));
    let p = d.decode(&data, 4, 10);
    assert_eq!((p.records, p.next_offset, p.limited), (10, 14, true));
    assert_eq!(
        p.groups[0].data,
        b"r4\nr5\nr6\nr7\nr8\nr9\nr0\nr1\nr2\nr3\n"
    );
    let p = d.decode(&data, 10, 10);
    assert_eq!((p.records, p.next_offset), (10, 20));
}

#[test]
fn attribution_from_headers_and_keys() {
    let h = |t: &str, v: Option<&str>| {
        let mut hs = vec![(b"target".to_vec(), Some(t.as_bytes().to_vec()))];
        if let Some(v) = v {
            hs.push((b"version".to_vec(), Some(v.as_bytes().to_vec())));
        }
        hs
    };
    let recs = [
        Rec {
            value: Some(b"1".to_vec()),
            headers: h("reviews", Some("v2")),
            ..Rec::default()
        },
        Rec {
            value: Some(b"2".to_vec()),
            key: Some(b"ratings/v7".to_vec()),
            ..Rec::default()
        },
        // a header wins over the key; the key fills in the version
        Rec {
            value: Some(b"3".to_vec()),
            key: Some(b"ignored/v9".to_vec()),
            headers: h("details", None),
        },
        rec(b"4"),
        Rec {
            value: Some(b"5".to_vec()),
            key: Some(b"no-slash".to_vec()),
            headers: vec![(b"other".to_vec(), None)],
        },
        Rec {
            value: Some(b"6".to_vec()),
            headers: h("reviews", Some("v2")),
            ..Rec::default()
        },
    ];
    let p = decode(&batch(0, &recs, 0), 0);
    let got: Vec<(&str, &str, &[u8])> = p
        .groups
        .iter()
        .map(|g| (g.target.as_str(), g.version.as_str(), g.data.as_slice()))
        .collect();
    assert_eq!(
        got,
        vec![
            ("reviews", "v2", &b"1\n6\n"[..]),
            ("ratings", "v7", &b"2\n"[..]),
            ("details", "v9", &b"3\n"[..]),
            ("", "", &b"4\n5\n"[..]),
        ]
    );
    // attribution off: one group
    let mut d = Decoder::new(DecodeOptions {
        key_attribution: false,
        target_header: vec![],
        version_header: vec![],
        ..DecodeOptions::default()
    });
    assert_eq!(d.decode(&batch(0, &recs, 0), 0, u64::MAX).groups.len(), 1);
}

#[test]
fn envelopes_keep_the_string_on() {
    let mut d = Decoder::new(DecodeOptions {
        envelope_key: Some("message".into()),
        ..DecodeOptions::default()
    });
    let recs = [
        rec(br#"{"host": "h", "message": "x \"q\"", "source_type": "k"}"#),
        rec(br#"{"host":"h","message":"y"}"#),
        rec(b"raw line"),
    ];
    let p = d.decode(&batch(0, &recs, 0), 0, u64::MAX);
    assert_eq!(
        p.groups[0].data,
        b"{\"log\":\"x \\\"q\\\"\", \"source_type\": \"k\"}\n{\"log\":\"y\"}\nraw line\n"
    );
}

#[test]
fn large_records_are_skipped_and_counted() {
    let mut d = Decoder::new(DecodeOptions {
        max_record_bytes: 10,
        ..DecodeOptions::default()
    });
    let p = d.decode(
        &batch(
            0,
            &[rec(b"short"), rec(b"far too long for it"), rec(b"ok")],
            0,
        ),
        0,
        u64::MAX,
    );
    assert_eq!(p.groups[0].data, b"short\nok\n");
    assert_eq!(skipped(&p, Skip::RecordTooLarge), 1);
    assert_eq!((p.next_offset, p.records), (3, 3));
}

#[test]
fn control_batches_and_old_magic_advance_the_offset() {
    let mut control = batch(0, &[rec(b"marker")], 0);
    control[22] |= 0x20; // attributes low byte: control
    let crc = crc32c::crc32c(&control[21..]);
    control[17..21].copy_from_slice(&crc.to_be_bytes());
    let mut legacy = batch(1, &[rec(b"old")], 0);
    legacy[16] = 1;
    let data = [control, legacy, batch(2, &[rec(b"new")], 0)].concat();
    let p = decode(&data, 0);
    assert_eq!(p.groups[0].data, b"new\n");
    assert_eq!(skipped(&p, Skip::UnsupportedMagic), 1);
    assert_eq!(p.next_offset, 3);
}

#[test]
fn the_pool_hands_back_given_buffers_up_to_its_bounds() {
    let pool = BufferPool::new(2, 1 << 20);
    let a = pool.take(1000);
    assert!(a.capacity() >= 1000 && a.is_empty());
    let a_ptr = a.as_ptr();
    let mut b = pool.take(10);
    b.extend_from_slice(b"old lines");
    let c = pool.take(10);
    pool.give(a);
    pool.give(b);
    pool.give(c); // over `keep`: dropped
    assert_eq!(pool.idle(), 2);
    let again = pool.take(0);
    assert!(again.is_empty(), "a given buffer comes back cleared");
    let other = pool.take(0);
    assert!(again.as_ptr() == a_ptr || other.as_ptr() == a_ptr);
    assert_eq!(pool.idle(), 0);
    pool.give(Vec::with_capacity(2 << 20)); // over `max_capacity`: dropped
    pool.give(Vec::new());
    assert_eq!(pool.idle(), 0);
}

#[test]
fn decoded_groups_use_pooled_buffers() {
    let mut d = Decoder::new(DecodeOptions::default());
    let data = batch(0, &[rec(b"a"), rec(b"b")], 0);
    let first = d.decode(&data, 0, u64::MAX);
    let buf = first
        .groups
        .into_iter()
        .next()
        .map(|g| g.data)
        .unwrap_or_default();
    let ptr = buf.as_ptr();
    d.pool().give(buf);
    let second = d.decode(&data, 0, u64::MAX);
    assert_eq!(second.groups[0].data, b"a\nb\n");
    assert_eq!(second.groups[0].data.as_ptr(), ptr);
}

#[test]
fn next_offset_from_headers_matches_the_decode() {
    let mut control = batch(3, &[rec(b"marker")], 0);
    control[22] |= 0x20;
    let mut bad_crc = batch(4, &[rec(b"x"), rec(b"y")], 0);
    bad_crc[30] ^= 1;
    let mut legacy = batch(6, &[rec(b"old")], 0);
    legacy[16] = 1;
    let full = [
        batch(0, &[rec(b"a"), rec(b"b"), rec(b"c")], 0),
        control,
        bad_crc,
        legacy,
        batch(7, &[rec(b"d"), rec(b"e")], 3),
    ]
    .concat();
    for from in [0, 1, 3, 5, 7, 8, 9, 20] {
        for cut in [full.len(), full.len() - 5, 40, 0] {
            let data = &full[..cut];
            assert_eq!(
                next_offset_after(data, from),
                decode(data, from).next_offset,
                "from {from}, {cut} bytes"
            );
        }
    }
    assert_eq!(next_offset_after(&full, 0), 9);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn next_offset_after_agrees_with_decode_on_wellformed_batches(
        batches in proptest::collection::vec((1usize..6, 0i16..5, 0u8..4), 1..6),
        from in 0i64..40,
        cut in any::<proptest::sample::Index>(),
    ) {
        let mut data = Vec::new();
        let mut base = 0i64;
        for (n, codec, gap) in batches {
            let recs: Vec<Rec> = (0..n).map(|i| rec(format!("line {base} {i}").as_bytes())).collect();
            data.extend(batch(base, &recs, codec));
            base += n as i64 + gap as i64; // compaction leaves gaps
        }
        let data = &data[..cut.index(data.len() + 1)];
        prop_assert_eq!(next_offset_after(data, from), decode(data, from).next_offset);
    }

    #[test]
    fn next_offset_after_never_panics(data in proptest::collection::vec(any::<u8>(), 0..600), from in -2i64..50) {
        prop_assert!(next_offset_after(&data, from) >= from);
    }

    #[test]
    fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..600), from in -2i64..50) {
        for check in [true, false] {
            let mut d = Decoder::new(DecodeOptions { check_crcs: check, envelope_key: Some("log".into()), ..DecodeOptions::default() });
            let p = d.decode(&data, from, 1000);
            prop_assert!(p.next_offset >= from);
        }
    }

    #[test]
    fn mutated_batches_never_panic(
        seed_values in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..40), 1..8),
        codec in 0i16..5,
        flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..6),
    ) {
        let recs: Vec<Rec> = seed_values.iter().map(|v| rec(v)).collect();
        let mut data = batch(7, &recs, codec);
        for (at, x) in flips {
            let i = at % data.len();
            data[i] ^= x;
        }
        let mut d = Decoder::new(DecodeOptions { check_crcs: false, ..DecodeOptions::default() });
        let p = d.decode(&data, 7, 1000);
        prop_assert!(p.next_offset >= 7);
    }
}

/// `cargo test --release -- --ignored --nocapture speed_kafka`: decoding of uncompressed batches
/// of 1 MiB (as the bench's producer writes them), 1 line and 100 lines per record, CRC checked.
#[test]
#[ignore]
fn speed_kafka_decode() {
    let line = [b'x'; 824];
    for per_record in [1usize, 100] {
        let value: Vec<u8> = (0..per_record)
            .flat_map(|i| {
                let mut l = line.to_vec();
                if i + 1 < per_record {
                    l.push(b'\n');
                }
                l
            })
            .collect();
        let per_batch = ((1 << 20) / value.len()).max(1);
        let mut data = Vec::new();
        let mut base = 0i64;
        while data.len() < 16 << 20 {
            let recs: Vec<Rec> = (0..per_batch).map(|_| rec(&value)).collect();
            data.extend(batch(base, &recs, 0));
            base += per_batch as i64;
        }
        let mut d = Decoder::new(DecodeOptions::default());
        let rounds = 20;
        let t = std::time::Instant::now();
        let mut lines = 0u64;
        for _ in 0..rounds {
            let p = d.decode(&data, 0, u64::MAX);
            lines += p.groups.iter().map(|g| g.data.len() as u64).sum::<u64>() / 825;
            for g in p.groups {
                d.pool().give(g.data);
            }
        }
        let s = t.elapsed().as_secs_f64();
        println!(
            "speed_kafka_decode {per_record} line(s)/record: {:.0} MB/s, {:.2} M records/s, {:.2} M lines/s",
            (data.len() * rounds) as f64 / s / 1e6,
            (base as f64 * rounds as f64) / s / 1e6,
            lines as f64 / s / 1e6
        );
    }
}
