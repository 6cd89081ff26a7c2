//! Automatic format detection from a sample of lines.
//!
//! Each of the first [`MAX_LINES`] non-blank complete lines is unwrapped (CRI / Docker
//! json-file) and classified by its shape alone (cheap checks, no full parse, no JSON
//! parser); the format with the most votes wins, ties going to the earlier format in
//! [`Format::ALL`]. Lines that match nothing (proxy start-up messages, garbage) do not
//! vote, so a sample where a few access-log lines follow other output is still detected.

use memchr::memmem;

use super::time::{parse_nginx_time_ms, parse_rfc3339_ms};
use super::unwrap::{unwrap_line, Unwrapped, Wrapping};
use super::Format;

/// At most this many non-blank lines vote.
pub const MAX_LINES: usize = 20;

/// Guess the format of `sample` (the first few KiB of a stream; may end mid-line).
/// `None` when no format matches.
pub fn detect(sample: &[u8]) -> Option<Format> {
    let mut votes = [0u32; Format::ALL.len()];
    let mut decoded = String::new();
    for line in sample_lines(sample).take(MAX_LINES) {
        let Ok(line) = std::str::from_utf8(line) else {
            continue;
        };
        let format = match unwrap_line(line, Wrapping::Auto, &mut decoded) {
            Unwrapped::Borrowed { payload, .. } => classify(payload),
            Unwrapped::Decoded { .. } => classify(&decoded),
        };
        if let Some(f) = format {
            if let Some(i) = Format::ALL.iter().position(|&g| g == f) {
                votes[i] += 1;
            }
        }
    }
    let (best, &n) = votes
        .iter()
        .enumerate()
        .rev() // `max_by_key` keeps the last maximum; reversed, that is the first format.
        .max_by_key(|(_, n)| **n)?;
    (n > 0).then(|| Format::ALL[best])
}

/// The complete, non-blank lines of `sample` without `\r`. A trailing fragment (no `\n`)
/// is used only when the sample has no complete line at all.
fn sample_lines(sample: &[u8]) -> impl Iterator<Item = &[u8]> {
    let complete = match memchr::memrchr(b'\n', sample) {
        Some(last_nl) => sample.get(..last_nl).unwrap_or_default(),
        None => sample,
    };
    complete
        .split(|&c| c == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
        .filter(|l| !l.trim_ascii().is_empty())
}

/// The format whose shape `line` has, if any.
pub fn classify(line: &str) -> Option<Format> {
    let b = line.trim_ascii().as_bytes();
    match b.first()? {
        b'{' => classify_json(b),
        b'[' => is_istio_text(b).then_some(Format::IstioText),
        _ => classify_addr_first(b),
    }
}

/// JSON object lines, told apart by their keys.
fn classify_json(b: &[u8]) -> Option<Format> {
    if b.last() != Some(&b'}') {
        return None;
    }
    let has = |key: &[u8]| memmem::find(b, key).is_some();
    if has(b"\"upstream_cluster\"") || has(b"\"response_code\"") || has(b"\"start_time\"") {
        Some(Format::IstioJson)
    } else if has(b"\"total_ns\"") || has(b"\"client.addr\"") {
        Some(Format::LinkerdJson)
    } else {
        Some(Format::Ndjson)
    }
}

/// `[RFC 3339] "` at the start.
fn is_istio_text(b: &[u8]) -> bool {
    let Some(close) = memchr::memchr(b']', b) else {
        return false;
    };
    b.get(close + 1..close + 3) == Some(b" \"")
        && b.get(1..close).and_then(parse_rfc3339_ms).is_some()
}

/// `ip - user [dd/Mon/yyyy:...] "` … `[upstream] [alt]` (nginx) or
/// `addr id - [RFC 3339] "` (Linkerd apache).
fn classify_addr_first(b: &[u8]) -> Option<Format> {
    let open = memchr::memchr(b'[', b)?;
    let close = open + memchr::memchr(b']', b.get(open..)?)?;
    let head = b.get(..open)?;
    let time = b.get(open + 1..close)?;
    if b.get(close + 1..close + 3) != Some(b" \"") {
        return None;
    }
    // `head` is three space-terminated tokens.
    let mut words = head.split(|&c| c == b' ');
    let (w1, w2, w3, rest) = (words.next()?, words.next()?, words.next()?, words.next()?);
    if w1.is_empty() || w2.is_empty() || w3.is_empty() || !rest.is_empty() || words.next().is_some()
    {
        return None;
    }
    if w2 == b"-" && parse_nginx_time_ms(time).is_some() {
        let after = b.get(close + 1..)?;
        return memmem::find(after, b"] [").map(|_| Format::Nginx);
    }
    if w3 == b"-" && parse_rfc3339_ms(time).is_some() {
        return Some(Format::LinkerdApache);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const ISTIO_TEXT: &str = "[2026-11-26T05:06:07.123Z] \"GET /reviews/0 HTTP/1.1\" 200 - via_upstream - \"-\" 0 358 12 11 \"-\" \"Go-http-client/1.1\" \"9b1f3c2e\" \"reviews:9080\" \"10.244.1.17:9080\" outbound|9080|primary|reviews.default.svc.cluster.local 10.244.2.5:51234 10.96.41.10:9080 10.244.2.5:40112 - default";
    const ISTIO_JSON: &str = r#"{"start_time":"2026-11-26T05:06:07.130Z","route_name":"default","method":"GET","path":"/reviews/0","protocol":"HTTP/1.1","response_code":200,"response_flags":"-","duration":4,"upstream_cluster":"inbound|9080||"}"#;
    const LINKERD_JSON: &str = r#"{"client.addr":"10.42.0.70:32996","client.id":"-","host":"webapp:7000","method":"POST","status":303,"timestamp":"2022-08-23T20:33:42.436964052Z","total_ns":"14122403","uri":"http://webapp:7000/authors","version":"HTTP/2.0"}"#;
    const NDJSON: &str =
        r#"{"ts":"2026-11-26T05:06:07Z","svc":"reviews","ver":"canary","code":200,"ms":12.5}"#;
    const NGINX: &str = "10.244.0.1 - - [25/Feb/2026:10:30:15 +0000] \"GET /api/v1/users HTTP/1.1\" 200 1234 \"https://example.com\" \"Mozilla/5.0\" 456 0.032 [default-myapp-svc-80] [] 192.168.22.1:8080 1234 0.031 200 abc123def456";
    const LINKERD_APACHE: &str = "10.42.0.63:51160 traffic.booksapp.serviceaccount.identity.linkerd.cluster.local - [2022-08-23T20:28:20.187706137Z] \"POST http://webapp:7000/authors HTTP/2.0\" 303";
    const LINKERD_APACHE_PROBE: &str =
        "10.42.0.1:43682 - - [2022-08-23T20:28:23.049685223Z] \"GET /ping HTTP/1.1\" 200";
    const ENVOY_STARTUP: &str = "2026-11-26T05:06:00.000000Z\tinfo\tEnvoy proxy is ready";

    fn cri(line: &str) -> String {
        format!("2026-08-13T10:00:00.123456789Z stdout F {line}")
    }

    fn docker(line: &str) -> String {
        let mut esc = String::new();
        for c in line.chars() {
            match c {
                '"' => esc.push_str("\\\""),
                '\\' => esc.push_str("\\\\"),
                '<' => esc.push_str("\\u003c"),
                c => esc.push(c),
            }
        }
        format!(
            "{{\"log\":\"{esc}\\n\",\"stream\":\"stdout\",\"time\":\"2026-08-13T10:00:00.1Z\"}}"
        )
    }

    fn sample(lines: &[String]) -> Vec<u8> {
        let mut s = lines.join("\n").into_bytes();
        s.push(b'\n');
        s
    }

    fn cases() -> Vec<(&'static str, Format)> {
        vec![
            (ISTIO_TEXT, Format::IstioText),
            (ISTIO_JSON, Format::IstioJson),
            (LINKERD_JSON, Format::LinkerdJson),
            (NDJSON, Format::Ndjson),
            (NGINX, Format::Nginx),
            (LINKERD_APACHE, Format::LinkerdApache),
            (LINKERD_APACHE_PROBE, Format::LinkerdApache),
        ]
    }

    #[test]
    fn each_format_plain_cri_and_docker() {
        for (line, format) in cases() {
            let plain: fn(&str) -> String = |l| l.to_string();
            for wrap in [plain, cri, docker] {
                let lines: Vec<String> = (0..5).map(|_| wrap(line)).collect();
                assert_eq!(detect(&sample(&lines)), Some(format), "{}", lines[0]);
            }
        }
    }

    #[test]
    fn other_output_and_a_cut_last_line_do_not_vote() {
        let mut s = sample(&[
            ENVOY_STARTUP.to_string(),
            String::new(),
            NGINX.to_string(),
            "garbage".to_string(),
            NGINX.to_string(),
            "\r".to_string(),
        ]);
        // A sample ending mid-line: the fragment looks like Istio TEXT but is not counted.
        s.extend_from_slice(ISTIO_TEXT.as_bytes());
        s.extend_from_slice(b"\n");
        s.extend_from_slice(&ISTIO_TEXT.as_bytes()[..40]);
        assert_eq!(detect(&s), Some(Format::Nginx));
        // With CRLF line ends.
        let crlf = format!("{ISTIO_TEXT}\r\n{ISTIO_TEXT}\r\n");
        assert_eq!(detect(crlf.as_bytes()), Some(Format::IstioText));
        // A single line without a newline is used.
        assert_eq!(
            detect(LINKERD_APACHE.as_bytes()),
            Some(Format::LinkerdApache)
        );
    }

    #[test]
    fn votes_decide_and_are_bounded() {
        let mut lines: Vec<String> = (0..3).map(|_| ISTIO_JSON.to_string()).collect();
        lines.extend((0..4).map(|_| cri(ISTIO_TEXT)));
        assert_eq!(detect(&sample(&lines)), Some(Format::IstioText));
        // Only the first MAX_LINES lines vote.
        let mut lines: Vec<String> = (0..MAX_LINES).map(|_| NDJSON.to_string()).collect();
        lines.extend((0..MAX_LINES + 5).map(|_| NGINX.to_string()));
        assert_eq!(detect(&sample(&lines)), Some(Format::Ndjson));
    }

    #[test]
    fn garbage_is_none() {
        for s in [
            &b""[..],
            b"\n\n   \n",
            b"hello world\nfoo bar baz\n",
            b"2026-11-26T05:06:00Z\tinfo\tready\n",
            b"[not a time] \"x\"\n",
            b"{\"unterminated\": \n",
            b"1.2.3.4 - - [25/Feb/2026:10:30:15 +0000] \"GET / HTTP/1.1\" 200 5\n",
            b"\xff\xfe\x00\n",
        ] {
            assert_eq!(detect(s), None, "{}", String::from_utf8_lossy(s));
        }
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(s in proptest::collection::vec(any::<u8>(), 0..600)) {
            let _ = detect(&s);
        }

        #[test]
        fn arbitrary_strings_never_panic(s in any::<String>()) {
            let _ = detect(s.as_bytes());
            let _ = classify(&s);
        }
    }
}
