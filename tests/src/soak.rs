//! "The broker still serves afterwards": a short, complete workload to run after something nasty.

use crate::soap::{self, Version};

/// Run `rounds` complete sessions against the `/soap` endpoint at `url`, alternating SOAP 1.1 and
/// 1.2: Begin with an Echo, two continues, End with an Echo; then the ended session must be gone
/// (-1001). Panics, naming the round and step, on the first thing that is not as it should be.
pub fn assert_serves(url: &str, rounds: usize) {
    for round in 0..rounds {
        let v = if round % 2 == 0 {
            Version::V11
        } else {
            Version::V12
        };
        let ctx = |step: &str| format!("soak round {round} ({v:?}), {step}");

        let text = format!("soak-{round}-begin");
        let r = soap::call(url, v, &soap::begin(), &soap::echo(&text));
        assert_eq!(r.status(), 200, "{}: {}", ctx("Begin"), r.describe());
        r.expect_echo(&text);
        let id = r
            .session_id()
            .unwrap_or_else(|| panic!("{}: no SessionID: {}", ctx("Begin"), r.describe()));

        for k in 0..2 {
            let text = format!("soak-{round}-{k}");
            let r = soap::call(url, v, &soap::cont(&id), &soap::echo(&text));
            assert_eq!(r.status(), 200, "{}: {}", ctx("continue"), r.describe());
            r.expect_echo(&text);
            assert_eq!(
                r.session_id().as_deref(),
                Some(id.as_str()),
                "{}: {}",
                ctx("continue"),
                r.describe()
            );
        }

        let text = format!("soak-{round}-end");
        let r = soap::call(url, v, &soap::end(&id), &soap::echo(&text));
        assert_eq!(r.status(), 200, "{}: {}", ctx("End"), r.describe());
        r.expect_echo(&text);
        assert!(
            r.session_headers().is_empty(),
            "{}: the End reply must not carry a Session: {}",
            ctx("End"),
            r.describe()
        );

        let r = soap::call(url, v, &soap::cont(&id), &soap::echo("after end"));
        let f = r.expect_fault();
        assert_eq!(
            f.detail_code,
            Some(-1001),
            "{}: {}",
            ctx("continue after End"),
            r.describe()
        );
    }
}
