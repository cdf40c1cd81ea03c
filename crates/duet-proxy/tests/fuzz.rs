//! Fuzzing the parsers a hostile peer reaches first: the HTTP/1 head parser (requests and
//! responses) and the PROXY protocol parser. Property-based (proptest) so it runs on the stable
//! toolchain in every `.ci/run`, briefly: inputs are built from the grammar with hostile
//! variations (framing headers, odd whitespace, bare CR/LF, NUL, folded lines, lists), plus
//! mutated and random bytes. `PROPTEST_CASES=100000` runs it longer.
//!
//! Properties: nothing panics; a head that is accepted is forwarded as a head that is accepted
//! again with the same framing and that a strict reader finds unambiguous.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use duet_proxy::h1::{self, ClientInfo, Framing, Limits};
use duet_proxy::proxy_protocol::{self, Header, Version};
use proptest::prelude::*;

mod common;

const CLIENT: ClientInfo = ClientInfo {
    addr: IpAddr::V4(Ipv4Addr::new(192, 0, 2, 9)),
    proto: "http",
    local: SocketAddr::new(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)), 80),
};

/// Header names a smuggler plays with, and some harmless ones.
fn name() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("Content-Length".to_string()),
        Just("content-length".to_string()),
        Just("Transfer-Encoding".to_string()),
        Just("Host".to_string()),
        Just("Connection".to_string()),
        Just("Expect".to_string()),
        Just("X-Forwarded-For".to_string()),
        Just("Forwarded".to_string()),
        Just("Upgrade".to_string()),
        Just("Transfer-Encoding ".to_string()),
        Just(" Transfer-Encoding".to_string()),
        "[A-Za-z-]{1,12}",
    ]
}

/// Values, with the separators and control bytes that confuse parsers.
fn value() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("chunked".to_string()),
        Just("Chunked".to_string()),
        Just("chunked, identity".to_string()),
        Just("identity, chunked".to_string()),
        Just("xchunked".to_string()),
        Just("close, Content-Length".to_string()),
        Just("Content-Length, Host, Transfer-Encoding".to_string()),
        Just("100-continue".to_string()),
        Just("0".to_string()),
        Just("5".to_string()),
        Just("5, 5".to_string()),
        Just("5, 6".to_string()),
        Just("+5".to_string()),
        Just("18446744073709551616".to_string()),
        Just("a\0b".to_string()),
        Just("a\rb".to_string()),
        Just("\tchunked".to_string()),
        "[ -~]{0,16}",
    ]
}

fn line_end() -> impl Strategy<Value = &'static str> {
    prop_oneof![40 => Just("\r\n"), 1 => Just("\n"), 1 => Just("\r\n "), 1 => Just("\r")]
}

fn request_head() -> impl Strategy<Value = Vec<u8>> {
    let start = prop_oneof![
        Just("GET / HTTP/1.1".to_string()),
        Just("POST /p HTTP/1.1".to_string()),
        Just("POST /p HTTP/1.0".to_string()),
        Just("GET http://a.example/x HTTP/1.1".to_string()),
        Just("HEAD * HTTP/1.1".to_string()),
        Just("OPTIONS * HTTP/1.1".to_string()),
        Just("CONNECT a:443 HTTP/1.1".to_string()),
        "[A-Z]{1,7} [ -~]{0,12} HTTP/1\\.[0-2]",
    ];
    (
        start,
        prop::collection::vec((name(), value(), line_end()), 0..6),
        prop::bool::weighted(0.9),
    )
        .prop_map(|(start, headers, with_host)| {
            let mut out = format!("{start}\r\n");
            if with_host {
                out.push_str("Host: a.example\r\n");
            }
            for (n, v, end) in headers {
                out.push_str(&format!("{n}: {v}{end}"));
            }
            out.push_str("\r\nbody");
            out.into_bytes()
        })
}

fn framing_of_request(raw: &[u8]) -> Option<(Framing, usize)> {
    let mut h = [httparse::EMPTY_HEADER; 64];
    match h1::parse_request(raw, &mut h, Limits::default()) {
        Ok(Some(r)) => Some((r.framing, r.head_len)),
        _ => None,
    }
}

/// Checks one input against the request properties.
fn check_request(raw: &[u8]) -> Result<(), TestCaseError> {
    let mut h = [httparse::EMPTY_HEADER; 64];
    let Ok(Some(req)) = h1::parse_request(raw, &mut h, Limits::default()) else {
        return Ok(());
    };
    prop_assert!(req.head_len <= raw.len());
    let mut out = Vec::new();
    h1::write_request_head(&req, CLIENT, &mut out);
    // The forwarded head is accepted again, with the same framing.
    let again = framing_of_request(&out);
    prop_assert_eq!(
        again.map(|(f, _)| f),
        Some(req.framing),
        "forwarded {:?}",
        String::from_utf8_lossy(&out)
    );
    prop_assert_eq!(again.map(|(_, n)| n), Some(out.len()));
    // And a strict reader finds one framing in it.
    let text = String::from_utf8_lossy(&out).into_owned();
    let lines: Vec<String> = text
        .split('\n')
        .skip(1)
        .take_while(|l| !l.is_empty() && *l != "\r")
        .map(str::to_string)
        .collect();
    let mut ambiguous = Vec::new();
    common::strict::judge_headers(&lines, &mut ambiguous);
    prop_assert!(ambiguous.is_empty(), "{:?} in {:?}", ambiguous, text);
    Ok(())
}

fn response_head() -> impl Strategy<Value = Vec<u8>> {
    (
        prop_oneof![
            Just(200u16),
            Just(204),
            Just(304),
            Just(100),
            Just(103),
            Just(101),
            100u16..600
        ],
        prop::collection::vec((name(), value(), line_end()), 0..8),
    )
        .prop_map(|(status, headers)| {
            let mut out = format!("HTTP/1.1 {status} X\r\n");
            for (n, v, end) in headers {
                out.push_str(&format!("{n}: {v}{end}"));
            }
            out.push_str("\r\nbody");
            out.into_bytes()
        })
}

fn check_response(raw: &[u8], head_request: bool) -> Result<(), TestCaseError> {
    let mut h = [httparse::EMPTY_HEADER; 64];
    let Ok(Some(res)) = h1::parse_response(raw, &mut h, Limits::default(), head_request) else {
        return Ok(());
    };
    let mut out = Vec::new();
    h1::write_response_head(&res, true, b"", &mut out);
    let mut h2 = [httparse::EMPTY_HEADER; 64];
    let again = h1::parse_response(&out, &mut h2, Limits::default(), head_request);
    let again = again.ok().flatten().map(|r| r.framing);
    // A body until close is forwarded without a length; everything else keeps its framing.
    prop_assert_eq!(
        again,
        Some(res.framing),
        "forwarded {:?}",
        String::from_utf8_lossy(&out)
    );
    Ok(())
}

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(3000),
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn request_heads_from_the_grammar(raw in request_head()) {
        check_request(&raw)?;
    }

    #[test]
    fn mutated_request_heads(raw in request_head(), flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4)) {
        let mut raw = raw;
        for (at, byte) in flips {
            let i = at.index(raw.len());
            raw[i] = byte;
        }
        check_request(&raw)?;
    }

    #[test]
    fn random_bytes_as_a_request(raw in prop::collection::vec(any::<u8>(), 0..256)) {
        check_request(&raw)?;
    }

    #[test]
    fn response_heads_from_the_grammar(raw in response_head(), head in any::<bool>()) {
        check_response(&raw, head)?;
    }

    #[test]
    fn proxy_headers_round_trip_and_garbage_never_panics(
        v2 in any::<bool>(),
        a in any::<[u8; 4]>(), b in any::<[u8; 4]>(), pa in any::<u16>(), pb in any::<u16>(),
        cut in any::<prop::sample::Index>(),
        flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..3),
        tail in prop::collection::vec(any::<u8>(), 0..16),
    ) {
        let source = SocketAddr::new(IpAddr::from(a), pa);
        let destination = SocketAddr::new(IpAddr::from(b), pb);
        let mut raw = Vec::new();
        proxy_protocol::encode(if v2 { Version::V2 } else { Version::V1 }, source, destination, &mut raw);
        let len = raw.len();
        raw.extend_from_slice(&tail);
        // Whole: parses back to what was encoded, and says where the client's bytes start.
        prop_assert_eq!(
            proxy_protocol::parse(&raw),
            Ok(Some((Header::Proxied { source, destination }, len)))
        );
        // Cut short: asks for more or refuses, never claims more than it has.
        let short = &raw[..cut.index(len)];
        if let Ok(Some((_, n))) = proxy_protocol::parse(short) {
            prop_assert!(n <= short.len());
        }
        // Mutated: whatever it says stays within the bytes.
        let mut bent = raw.clone();
        for (at, byte) in flips {
            let i = at.index(bent.len());
            bent[i] = byte;
        }
        if let Ok(Some((_, n))) = proxy_protocol::parse(&bent) {
            prop_assert!(n <= bent.len());
        }
    }

    #[test]
    fn random_bytes_as_a_proxy_header(raw in prop::collection::vec(any::<u8>(), 0..128), v2_sig in any::<bool>()) {
        let mut raw = raw;
        if v2_sig {
            let mut sig = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
            sig.extend_from_slice(&raw);
            raw = sig;
        }
        if let Ok(Some((_, n))) = proxy_protocol::parse(&raw) {
            prop_assert!(n <= raw.len());
        }
    }
}

/// The grammar reaches the forwarder: a good share of its heads are accepted, with every
/// framing, so the properties above are not vacuous.
#[test]
fn the_grammar_produces_accepted_heads_of_every_framing() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    let mut runner = TestRunner::deterministic();
    let (mut accepted, mut framings) = (0, std::collections::BTreeSet::new());
    for _ in 0..2000 {
        let raw = request_head().new_tree(&mut runner).unwrap().current();
        if let Some((f, _)) = framing_of_request(&raw) {
            accepted += 1;
            framings.insert(format!("{f:?}").split('(').next().unwrap().to_string());
        }
    }
    assert!(accepted > 200, "only {accepted} of 2000 accepted");
    assert_eq!(
        framings.into_iter().collect::<Vec<_>>(),
        ["Chunked", "Empty", "Length"]
    );
}
