//! Every parser on arbitrary input: the first byte picks the format. A parser may reject
//! a line, never panic; an accepted record must be sane.
#![no_main]

use canary_stream_core::parse::ndjson::Mapping;
use canary_stream_core::parse::{detect, parse_line, unwrap, Format};
use canary_stream_core::record::Record;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    let format = Format::ALL[selector as usize % Format::ALL.len()];
    let mapping = Mapping::default();
    let _ = detect::detect(body);
    let Ok(text) = std::str::from_utf8(body) else {
        return;
    };
    let mut scratch = String::new();
    for line in text.lines() {
        let _ = unwrap::unwrap_line(line, unwrap::Wrapping::Auto, &mut scratch);
        let mut rec = Record::default();
        if parse_line(format, &mapping, line, &mut rec).is_ok() {
            if let Some(l) = rec.latency_ms {
                assert!(l.is_finite() && l >= 0.0, "latency {l} from {line:?}");
            }
            assert!(rec.status < 1000, "status {} from {line:?}", rec.status);
        }
    }
});
