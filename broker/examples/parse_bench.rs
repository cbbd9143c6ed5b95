//! Micro-benchmark of the SOAP envelope parser on a typical NonStop request: a `Session` header and
//! an `<Echo>` body carrying about 1 KiB of text.
//!
//! Run with `cargo run --release -p broker --example parse_bench [iterations]`.

use std::hint::black_box;
use std::time::Instant;

use broker::soap::{
    check_must_understand, parse_envelope, write_response, Limits, Roles, SoapVersion,
};

fn request() -> String {
    let text: String = "The quick brown fox jumps over the lazy dog. "
        .repeat(23)
        .chars()
        .take(1024)
        .collect();
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n\
         <SOAP-ENV:Envelope xmlns:SOAP-ENV=\"http://schemas.xmlsoap.org/soap/envelope/\" \
         xmlns:xsi=\"http://www.w3.org/2001/XMLSchema-instance\" xmlns:xsd=\"http://www.w3.org/2001/XMLSchema\">\n\
         <SOAP-ENV:Header>\n\
         <ns:Session xmlns:ns=\"urn:compaq_nsk_oss_SoapHeader\" SessionID=\"9b2f0c1e-4a7d-4d3b-8f61-2c5e7a9d0b34\"/>\n\
         </SOAP-ENV:Header>\n\
         <SOAP-ENV:Body>\n\
         <Echo xmlns=\"urn:example:echo\"><Message xsi:type=\"xsd:string\">{text}</Message></Echo>\n\
         </SOAP-ENV:Body>\n\
         </SOAP-ENV:Envelope>\n"
    )
}

fn main() {
    let iterations: u32 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(200_000);
    let input = request();
    let limits = Limits::default();
    let roles = Roles::default();
    let understood = |ns: Option<&str>, local: &str| {
        ns == Some("urn:compaq_nsk_oss_SoapHeader") && local == "Session"
    };

    let env = parse_envelope(input.as_bytes(), &limits, &roles).expect("valid request");
    assert_eq!(env.headers.len(), 1);
    assert_eq!(
        env.body.as_ref().map(|b| b.local_name.as_str()),
        Some("Echo")
    );

    for _ in 0..iterations / 10 {
        black_box(parse_envelope(black_box(input.as_bytes()), &limits, &roles).ok());
    }

    let mut best = f64::MAX;
    for _ in 0..5 {
        let t = Instant::now();
        for _ in 0..iterations {
            let env = parse_envelope(black_box(input.as_bytes()), &limits, &roles);
            if let Ok(env) = &env {
                black_box(check_must_understand(env, understood).is_ok());
            }
            black_box(env.ok());
        }
        best = best.min(t.elapsed().as_secs_f64() * 1e9 / f64::from(iterations));
    }
    println!(
        "parse_envelope + check_must_understand, {} byte NonStop request: {:.0} ns/iter (best of 5 x {} iterations), {:.0} MB/s",
        input.len(),
        best,
        iterations,
        input.len() as f64 / best * 1e3
    );

    let body = env.body.map(|b| b.xml).unwrap_or_default();
    let header = "<ns:Session xmlns:ns=\"urn:compaq_nsk_oss_SoapHeader\" SessionID=\"9b2f0c1e-4a7d-4d3b-8f61-2c5e7a9d0b34\"/>";
    let mut out = Vec::new();
    let t = Instant::now();
    for _ in 0..iterations {
        out.clear();
        write_response(SoapVersion::V11, &[header], black_box(&body), &mut out);
        black_box(&out);
    }
    println!(
        "write_response of the echoed body ({} bytes): {:.0} ns/iter",
        out.len(),
        t.elapsed().as_secs_f64() * 1e9 / f64::from(iterations)
    );
}
