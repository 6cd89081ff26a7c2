//! The whole pipeline (detection, unwrapping, parsing, attribution, aggregation) on
//! arbitrary bytes fed in arbitrary chunks: never panics, and every line is accounted for.
#![no_main]

use canary_stream_core::aggregate::WindowQuery;
use canary_stream_core::attribution::SourceContext;
use canary_stream_core::pipeline::{Config, Pipeline};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&chunk, body)) = data.split_first() else {
        return;
    };
    let mut p = Pipeline::new(Config {
        max_line_bytes: 512,
        ..Config::default()
    })
    .expect("default config is valid");
    let ctx = SourceContext::default();
    for part in body.chunks(chunk as usize + 1) {
        p.feed(part, &ctx, 1_700_000_000_000);
    }
    p.finish(&ctx, 1_700_000_000_000);
    let t = p.totals();
    assert_eq!(t.lines, t.accepted + t.reasons.0.iter().sum::<u64>());
    let snaps = p.aggregator().snapshot(&WindowQuery {
        window_ms: Some(60_000),
        end_ms: None,
        target: None,
        series: true,
    });
    for s in snaps {
        assert!(s.successes + s.failures == s.requests);
    }
});
