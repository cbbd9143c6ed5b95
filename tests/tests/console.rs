//! The web console (`/admin/` on the admin listener, issue 17), through a real headless Chromium:
//! each page as a person would see it (the broker, the classes and their workers, sessions page by
//! page with a search, one session's dialog), signed in with HTTP Basic and the admin token; no
//! page without credentials. A screenshot of each page is taken every run; with
//! `UPDATE_SCREENSHOTS=1` they are written to `docs/console/` (the ones the README shows).

use broker_tests::broker::free_port;
use broker_tests::browser;
use broker_tests::soap::{self, call11};
use broker_tests::{BrokerProcess, TestConfig};
use std::path::PathBuf;

const TOKEN: &str = "console-admin-token-0123456789";

fn cart() -> String {
    let mut toml = "\n[[server_class]]\nname = \"cart\"\nadapter = \"process\"\ncommand = [\"{broker_exe}\", \"sample-server\", \"cart\"]\ncontext = \"sensitive\"\nmin_workers = 1\nmax_workers = 2\n".to_string();
    for op in ["CartAdd", "CartList", "CartCheckout"] {
        toml.push_str(&format!(
            "\n[[service]]\nname = \"{op}\"\nendpoint = \"/soap\"\nserver_class = \"cart\"\n"
        ));
    }
    toml
}

/// The text of a DOM with its tags taken out (what is read on the page), spaces squeezed.
fn visible(dom: &str) -> String {
    let body = dom.split("<body>").nth(1).unwrap_or(dom);
    let mut text = String::new();
    let mut in_tag = false;
    for c in body.chars() {
        match c {
            '<' => {
                in_tag = true;
                text.push(' ');
            }
            '>' => in_tag = false,
            c if !in_tag => text.push(c),
            _ => {}
        }
    }
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The `href`s of the links whose text is `label`.
fn link(dom: &str, label: &str) -> Option<String> {
    dom.split("<a href=\"").skip(1).find_map(|rest| {
        let (href, after) = rest.split_once('"')?;
        let text = after.split_once('>')?.1.split_once("</a>")?.0;
        (text == label).then(|| href.replace("&amp;", "&"))
    })
}

/// Protects what an operator sees in a browser (see the module docs).
#[test]
fn an_operator_reads_the_console_in_a_real_browser() {
    let admin = format!("127.0.0.1:{}", free_port());
    let b = BrokerProcess::start(
        &TestConfig::new()
            .extra(&format!(
                "{}\n[admin]\nlisten = \"{admin}\"\ntoken = \"{TOKEN}\"\n",
                cart()
            ))
            .render(),
    );
    let url = b.url("/soap");
    let shopper = call11(
        &url,
        &soap::begin(),
        "<CartAdd><item>pear</item><qty>1</qty></CartAdd>",
    )
    .expect_session_id();
    let plain = soap::begin_session(&url);
    let signed_in = format!("http://console:{TOKEN}@{admin}");
    let shots = std::env::var_os("UPDATE_SCREENSHOTS")
        .map(|_| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/console"))
        .unwrap_or_else(|| {
            std::env::temp_dir().join(format!("console-shots-{}", std::process::id()))
        });
    std::fs::create_dir_all(&shots).expect("a screenshot directory");

    // Without credentials: a 401 asking for Basic (a browser's sign-in prompt, which headless
    // Chromium cancels), and nothing of the console on the screen.
    let r = broker_tests::http::get(&format!("http://{admin}/admin/"));
    assert_eq!(r.status, 401, "{}", r.describe());
    assert!(
        r.headers
            .iter()
            .any(|(k, v)| k.eq_ignore_ascii_case("www-authenticate") && v.starts_with("Basic")),
        "{}",
        r.describe()
    );
    let refused = visible(&browser::dump_dom(&format!("http://{admin}/admin/")));
    assert!(!refused.contains("Brokers sharing"), "{refused}");

    // The overview: this broker, the registry, live sessions, the classes.
    let overview = visible(&browser::dump_dom(&format!("{signed_in}/admin/")));
    for expected in [
        "soap-broker test",
        "State: serving",
        "Brokers sharing the store",
        &b.url(""),
        "/soap nonstop 2",
        "echo process 1 1 0 0 0 serving",
        "cart process 1 1 0 0 0 serving",
    ] {
        assert!(overview.contains(expected), "{expected:?} in {overview}");
    }

    // The classes page: the workers the broker really runs, the cart worker holding one dialog.
    let classes = visible(&browser::dump_dom(&format!("{signed_in}/admin/classes")));
    let cart_pid = b.worker_pids_where(|cmd| cmd.contains("sample-server cart"));
    assert_eq!(cart_pid.len(), 1);
    assert!(
        classes.contains(&format!("cart#1 {} idle 1 -", cart_pid[0])),
        "cart#1 with pid {} and one dialog in {classes}",
        cart_pid[0]
    );
    assert!(
        classes.contains("process adapter, context sensitive"),
        "{classes}"
    );

    // Sessions, one per page: the next-page link leads to the other one.
    let first_dom = browser::dump_dom(&format!("{signed_in}/admin/sessions?limit=1"));
    let first = visible(&first_dom);
    let next = link(&first_dom, "Next page →").unwrap_or_else(|| panic!("no next page: {first}"));
    let second = visible(&browser::dump_dom(&format!("{signed_in}{next}")));
    let (mut shown, mut other) = (Vec::new(), Vec::new());
    for id in [&shopper, &plain] {
        match (first.contains(id.as_str()), second.contains(id.as_str())) {
            (true, false) => shown.push(id),
            (false, true) => other.push(id),
            _ => panic!("{id} must be on exactly one page:\n{first}\n{second}"),
        }
    }
    assert_eq!((shown.len(), other.len()), (1, 1));
    assert!(first.contains("Search"), "the search form: {first}");
    // The search form's GET: a principal nobody has matches nothing.
    let none = visible(&browser::dump_dom(&format!(
        "{signed_in}/admin/sessions?endpoint=%2Fsoap&dialect=&principal=nobody&holder=&idle_longer_than=&limit=100"
    )));
    assert!(none.contains("No session matches."), "{none}");
    let bad = visible(&browser::dump_dom(&format!(
        "{signed_in}/admin/sessions?idle_longer_than=soon"
    )));
    assert!(bad.contains("idle_longer_than:"), "{bad}");

    // One session: the shopper's dialog, on the cart worker of this broker.
    let detail = visible(&browser::dump_dom(&format!(
        "{signed_in}/admin/sessions/{shopper}"
    )));
    for expected in [
        format!("Session {shopper}"),
        "Endpoint /soap".into(),
        "Dialect nonstop".into(),
        "Dialog Class cart Worker cart#1".into(),
        "Held by broker test".into(),
    ] {
        assert!(detail.contains(&expected), "{expected:?} in {detail}");
    }
    let gone = visible(&browser::dump_dom(&format!(
        "{signed_in}/admin/sessions/{}",
        "0".repeat(32)
    )));
    assert!(gone.contains("No such session"), "{gone}");

    for (name, path) in [
        ("overview", "/admin/".to_string()),
        ("classes", "/admin/classes".to_string()),
        ("sessions", "/admin/sessions".to_string()),
        ("session", format!("/admin/sessions/{shopper}")),
    ] {
        browser::screenshot(
            &format!("{signed_in}{path}"),
            &shots.join(format!("{name}.png")),
            1200,
            760,
        );
    }
    let log = b.stderr_text();
    assert!(!log.contains(TOKEN), "the token reached the log");
}
