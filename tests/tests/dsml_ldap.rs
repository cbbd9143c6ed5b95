//! DSML before a real directory: the `ldap` adapter behind `/dsml`, against the private OpenLDAP
//! `slapd` that `scripts/test.sh` starts (`scripts/slapd.sh`: the seeded tree under
//! dc=example,dc=com, its URL in BROKER_TEST_LDAP). Each operation kind, LDAP results carried into
//! the batchResponse (codes, matchedDN, diagnostic messages), requestIDs, onError exit and resume,
//! parallel processing, binary values, a paged search across the requests of one session, a
//! search of 10 000 entries, and the directory going down and coming back (a slapd of the test's
//! own).
//!
//! Tests that write use entries under ou=scratch named after the test and this process, so that
//! they can share the one directory and run in parallel.

use base64::Engine as _;
use broker_tests::dsml::{begin, call, end, expect_ad_session, expect_batch_response, session};
use broker_tests::dsml::{expect_fault, DsmlEndpoint, DsmlFault, DSML_NS};
use broker_tests::soap::SoapReply;
use broker_tests::xml::Element;
use broker_tests::BrokerProcess;
use std::process::Command;

const SUFFIX: &str = "dc=example,dc=com";

fn directory_url() -> String {
    std::env::var("BROKER_TEST_LDAP").unwrap_or_else(|_| {
        panic!("BROKER_TEST_LDAP is not set: run the tests with scripts/test.sh, which starts a private slapd (scripts/slapd.sh)")
    })
}

/// A broker whose `/dsml` endpoint has an ldap class bound as the directory's manager.
fn start_on(url: &str) -> BrokerProcess {
    let keys = format!(
        "directory = {url:?}\nbind_dn = \"cn=admin,{SUFFIX}\"\nbind_password = \"secret\"\nconnect_timeout = \"2s\""
    );
    BrokerProcess::start(&DsmlEndpoint::new().ldap(&keys).config().render())
}

fn start() -> BrokerProcess {
    start_on(&directory_url())
}

fn batch_with(attrs: &str, ops: &[String]) -> String {
    format!(
        "<batchRequest xmlns=\"{DSML_NS}\" xmlns:xsd=\"http://www.w3.org/2001/XMLSchema\" xmlns:xsi=\"http://www.w3.org/2001/XMLSchema-instance\" requestID=\"batch\" {attrs}>{}</batchRequest>",
        ops.concat()
    )
}

fn batch(ops: &[String]) -> String {
    batch_with("", ops)
}

/// A scratch DN for this test and process.
fn scratch(name: &str) -> String {
    format!("cn={name}-{},ou=scratch,{SUFFIX}", std::process::id())
}

fn search(id: &str, base: &str, scope: &str, filter: &str, attrs: &[&str], extra: &str) -> String {
    let attrs: String = attrs
        .iter()
        .map(|a| format!("<attribute name=\"{a}\"/>"))
        .collect();
    let attrs = if attrs.is_empty() {
        String::new()
    } else {
        format!("<attributes>{attrs}</attributes>")
    };
    format!(
        "<searchRequest requestID=\"{id}\" dn=\"{base}\" scope=\"{scope}\" derefAliases=\"neverDerefAliases\" {extra}><filter>{filter}</filter>{attrs}</searchRequest>"
    )
}

/// The batchResponse's operation responses.
fn responses(r: &SoapReply) -> Vec<Element> {
    expect_batch_response(r).elements().cloned().collect()
}

/// `(code, descr)` of an LDAP result element (or of a searchResponse's searchResultDone).
fn code(e: &Element) -> (u32, String) {
    let result = if e.local == "searchResponse" {
        e.child_local("searchResultDone")
            .unwrap_or_else(|| panic!("no searchResultDone: {e:?}"))
    } else {
        e
    };
    let rc = result
        .child_local("resultCode")
        .unwrap_or_else(|| panic!("no resultCode in {}: {result:?}", result.local));
    (
        rc.attr("code")
            .and_then(|c| c.parse().ok())
            .expect("a numeric code"),
        rc.attr("descr").unwrap_or_default().to_string(),
    )
}

/// An entry as the tests compare it: (dn, [(attribute, [values as text or base64])]).
type Entry = (String, Vec<(String, Vec<String>)>);

/// The entries of a searchResponse.
fn entries(e: &Element) -> Vec<Entry> {
    e.elements()
        .filter(|x| x.local == "searchResultEntry")
        .map(|entry| {
            let attrs = entry
                .elements()
                .filter(|a| a.local == "attr")
                .map(|a| {
                    (
                        a.attr("name").unwrap_or_default().to_string(),
                        a.elements()
                            .filter(|v| v.local == "value")
                            .map(|v| v.text())
                            .collect(),
                    )
                })
                .collect();
            (entry.attr("dn").unwrap_or_default().to_string(), attrs)
        })
        .collect()
}

/// Protects the mapping of every operation kind to LDAP and back: add (with a binary value),
/// search with attribute selection, compare (true and false), modify with add, replace and delete
/// in one request, modDN, del, the WhoAmI extended operation, and an error's code, matchedDN and
/// diagnostic message; every requestID echoed.
#[test]
fn each_operation_kind_reaches_the_directory() {
    let b = start();
    let url = b.url("/dsml");
    let dn = scratch("kinds");
    let renamed_rdn = format!("cn=kinds-renamed-{}", std::process::id());
    let renamed = format!("{renamed_rdn},ou=scratch,{SUFFIX}");
    // Left over from an earlier run of this process ID: gone first (noSuchObject is fine).
    call(
        &url,
        "",
        &batch_with(
            "onError=\"resume\"",
            &[
                format!("<delRequest dn=\"{dn}\"/>"),
                format!("<delRequest dn=\"{renamed}\"/>"),
            ],
        ),
    );

    let r = call(
        &url,
        "",
        &batch(&[
            format!("<addRequest requestID=\"a\" dn=\"{dn}\"><attr name=\"objectClass\"><value>device</value></attr><attr name=\"cn\"><value>kinds-{pid}</value></attr><attr name=\"description\"><value>first</value></attr></addRequest>", pid = std::process::id()),
            format!("<compareRequest requestID=\"c1\" dn=\"{dn}\"><assertion name=\"description\"><value>first</value></assertion></compareRequest>"),
            format!("<compareRequest requestID=\"c2\" dn=\"{dn}\"><assertion name=\"description\"><value>second</value></assertion></compareRequest>"),
            format!("<modifyRequest requestID=\"m\" dn=\"{dn}\"><modification name=\"description\" operation=\"replace\"><value>second</value></modification><modification name=\"l\" operation=\"add\"><value>Lisbon</value><value>Porto</value></modification><modification name=\"l\" operation=\"delete\"><value>Porto</value></modification></modifyRequest>"),
            search("s", &dn, "baseObject", "<present name=\"objectClass\"/>", &["description", "l"], ""),
            "<extendedRequest requestID=\"w\"><requestName>1.3.6.1.4.1.4203.1.11.3</requestName></extendedRequest>".to_string(),
            format!("<modDNRequest requestID=\"r\" dn=\"{dn}\" newrdn=\"{renamed_rdn}\" deleteoldrdn=\"true\"/>"),
            format!("<delRequest requestID=\"d\" dn=\"{renamed}\"/>"),
        ]),
    );
    let got = responses(&r);
    let summary: Vec<(String, Option<String>, u32)> = got
        .iter()
        .map(|e| {
            (
                e.local.clone(),
                e.attr("requestID").map(str::to_string),
                code(e).0,
            )
        })
        .collect();
    let want: Vec<(String, Option<String>, u32)> = [
        ("addResponse", "a", 0),
        ("compareResponse", "c1", 6),
        ("compareResponse", "c2", 5),
        ("modifyResponse", "m", 0),
        ("searchResponse", "s", 0),
        ("extendedResponse", "w", 0),
        ("modDNResponse", "r", 0),
        ("delResponse", "d", 0),
    ]
    .iter()
    .map(|(k, id, c)| (k.to_string(), Some(id.to_string()), *c))
    .collect();
    assert_eq!(summary, want, "{}", r.describe());
    assert_eq!(code(&got[1]).1, "compareTrue");
    assert_eq!(
        entries(&got[4]),
        vec![(
            dn.clone(),
            vec![
                ("description".to_string(), vec!["second".to_string()]),
                ("l".to_string(), vec!["Lisbon".to_string()]),
            ]
        )],
        "only the selected attributes, after the modifications"
    );
    let whoami = got[5]
        .child_local("response")
        .map(|v| v.text())
        .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
        .map(|b| String::from_utf8_lossy(&b).into_owned());
    assert_eq!(
        whoami.as_deref(),
        Some(format!("dn:cn=admin,{SUFFIX}").as_str()),
        "{}",
        r.describe()
    );

    // An error: the code, the matchedDN and the directory's own message come through.
    let r = call(
        &url,
        "",
        &batch(&[format!(
            "<delRequest requestID=\"gone\" dn=\"cn=nobody,ou=scratch,{SUFFIX}\"/>"
        )]),
    );
    let got = responses(&r);
    assert_eq!(
        code(&got[0]),
        (32, "noSuchObject".to_string()),
        "{}",
        r.describe()
    );
    assert_eq!(
        got[0].attr("matchedDN"),
        Some(format!("ou=scratch,{SUFFIX}").as_str())
    );
}

/// Protects onError: with exit (the default) the batch stops after the first failed operation
/// (what was done so far is answered); with resume every operation runs. A malformed operation is
/// its own `errorResponse type="malformedRequest"`.
#[test]
fn on_error_exit_stops_and_resume_goes_on() {
    let b = start();
    let url = b.url("/dsml");
    let ops = [
        search(
            "1",
            SUFFIX,
            "baseObject",
            "<present name=\"objectClass\"/>",
            &["dc"],
            "",
        ),
        format!("<delRequest requestID=\"2\" dn=\"cn=nobody,ou=scratch,{SUFFIX}\"/>"),
        "<frobRequest requestID=\"3\"/>".to_string(),
        search(
            "4",
            SUFFIX,
            "baseObject",
            "<present name=\"objectClass\"/>",
            &["dc"],
            "",
        ),
    ];
    let r = call(&url, "", &batch(&ops));
    let ids: Vec<Option<&str>> = expect_batch_response(&r)
        .elements()
        .map(|e| e.attr("requestID"))
        .collect();
    assert_eq!(ids, vec![Some("1"), Some("2")], "exit: {}", r.describe());

    let r = call(&url, "", &batch_with("onError=\"resume\"", &ops));
    let got = responses(&r);
    let kinds: Vec<(&str, Option<&str>)> = got
        .iter()
        .map(|e| (e.local.as_str(), e.attr("requestID")))
        .collect();
    assert_eq!(
        kinds,
        vec![
            ("searchResponse", Some("1")),
            ("delResponse", Some("2")),
            ("errorResponse", Some("3")),
            ("searchResponse", Some("4"))
        ],
        "{}",
        r.describe()
    );
    assert_eq!(got[2].attr("type"), Some("malformedRequest"));
}

/// Protects parallel processing: several searches of one batch sent at once on the connection,
/// every answer there and in request order.
#[test]
fn parallel_processing_answers_every_operation() {
    let b = start();
    let url = b.url("/dsml");
    let ops: Vec<String> = (1..=8)
        .map(|i| {
            search(
                &format!("p{i}"),
                &format!("ou=paged,{SUFFIX}"),
                "singleLevel",
                &format!("<equalityMatch name=\"cn\"><value>p{i:02}</value></equalityMatch>"),
                &["cn"],
                "",
            )
        })
        .collect();
    let r = call(&url, "", &batch_with("processing=\"parallel\"", &ops));
    let got = responses(&r);
    let found: Vec<(Option<&str>, usize)> = got
        .iter()
        .map(|e| (e.attr("requestID"), entries(e).len()))
        .collect();
    let want: Vec<(Option<&str>, usize)> = ["p1", "p2", "p3", "p4", "p5", "p6", "p7", "p8"]
        .iter()
        .map(|id| (Some(*id), 1))
        .collect();
    assert_eq!(found, want, "{}", r.describe());
}

/// Protects abandonRequest: in a parallel batch it abandons the search of the same batch it names
/// (LDAP Abandon once the search is sent). The search is a persistent one (content
/// synchronisation, refreshAndPersist: the directory never ends it), so only the abandon can:
/// it is answered `errorResponse type="other"`, the batch's other operation as usual, the abandon
/// itself with nothing, and the session's connection goes on. In a sequential batch the search it
/// names is done before the abandon is read: nothing to abandon.
#[test]
fn an_abandon_request_abandons_a_search_of_its_parallel_batch() {
    let b = start();
    let url = b.url("/dsml");
    let id = expect_ad_session(&call(&url, &begin(), &batch(&[])));
    // syncRequestValue: SEQUENCE { mode ENUMERATED refreshAndPersist (3) }.
    let persist = "<control type=\"1.3.6.1.4.1.4203.1.9.1.1\" criticality=\"true\"><controlValue xsi:type=\"xsd:base64Binary\">MAMKAQM=</controlValue></control>";
    let forever = format!(
        "<searchRequest requestID=\"forever\" dn=\"ou=paged,{SUFFIX}\" scope=\"singleLevel\" derefAliases=\"neverDerefAliases\">{persist}<filter><present name=\"cn\"/></filter></searchRequest>"
    );
    let abandon =
        |target: &str| format!("<abandonRequest requestID=\"a\" abandonID=\"{target}\"/>");
    let one = search(
        "one",
        &format!("ou=paged,{SUFFIX}"),
        "singleLevel",
        "<equalityMatch name=\"cn\"><value>p01</value></equalityMatch>",
        &["cn"],
        "",
    );
    let parallel = batch_with(
        "processing=\"parallel\"",
        &[forever, abandon("forever"), one.clone()],
    );
    let r = call(&url, &session(&id), &parallel);
    let got = responses(&r);
    let shape: Vec<(&str, Option<&str>)> = got
        .iter()
        .map(|e| (e.local.as_str(), e.attr("requestID")))
        .collect();
    assert_eq!(
        shape,
        vec![
            ("errorResponse", Some("forever")),
            ("searchResponse", Some("one"))
        ],
        "{}",
        r.describe()
    );
    assert_eq!(got[0].attr("type"), Some("other"));
    assert_eq!(entries(&got[1]).len(), 1);
    // Sequential: the search is answered whole, the abandon has nothing to do.
    let r = call(
        &url,
        &session(&id),
        &batch(&[bulk_search("", ""), abandon("bulk"), one]),
    );
    let got = responses(&r);
    assert_eq!(got.len(), 2, "no response to the abandon");
    assert_eq!(entries(&got[0]).len(), 10_000);
    assert_eq!(entries(&got[1]).len(), 1);
}

/// Protects binary values: a value that is not UTF-8 (ann's jpegPhoto) comes back as
/// `xsd:base64Binary` with its exact bytes, and a value sent as base64Binary (in the filter) is
/// decoded before it reaches the directory.
#[test]
fn binary_values_are_base64_both_ways() {
    let b = start();
    let url = b.url("/dsml");
    let photo: &[u8] = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x80\x81\xfe";
    let r = call(
        &url,
        "",
        &batch(&[search(
            "bin",
            &format!("ou=people,{SUFFIX}"),
            "singleLevel",
            &format!(
                "<equalityMatch name=\"uid\"><value xsi:type=\"xsd:base64Binary\">{}</value></equalityMatch>",
                base64::engine::general_purpose::STANDARD.encode("ann")
            ),
            &["jpegPhoto"],
            "",
        )]),
    );
    let got = responses(&r);
    let found = entries(&got[0]);
    assert_eq!(found.len(), 1, "{}", r.describe());
    assert_eq!(found[0].0, format!("uid=ann,ou=people,{SUFFIX}"));
    let value = expect_batch_response(&r)
        .descendants()
        .into_iter()
        .find(|e| e.local == "value")
        .cloned()
        .expect("a value");
    assert_eq!(
        value.attr_ns("http://www.w3.org/2001/XMLSchema-instance", "type"),
        Some("xsd:base64Binary")
    );
    assert_eq!(
        base64::engine::general_purpose::STANDARD
            .decode(value.text().trim())
            .ok()
            .as_deref(),
        Some(photo)
    );
}

/// BER of the paged-results control value: SEQUENCE { INTEGER size, OCTET STRING cookie }.
fn paged_value(size: u8, cookie: &[u8]) -> String {
    let mut inner = vec![0x02, 0x01, size, 0x04, cookie.len() as u8];
    inner.extend_from_slice(cookie);
    let mut v = vec![0x30, inner.len() as u8];
    v.extend(inner);
    base64::engine::general_purpose::STANDARD.encode(v)
}

/// The cookie of a paged-results response control (same shape as the request's value).
fn paged_cookie(done: &Element) -> Vec<u8> {
    let control = done
        .elements()
        .find(|c| c.local == "control" && c.attr("type") == Some("1.2.840.113556.1.4.319"))
        .unwrap_or_else(|| panic!("no paged-results control: {done:?}"));
    let v = base64::engine::general_purpose::STANDARD
        .decode(
            control
                .child_local("controlValue")
                .expect("a value")
                .text()
                .trim(),
        )
        .expect("base64");
    // 30 len 02 len size... 04 len cookie
    let int_len = v[3] as usize;
    let at = 4 + int_len;
    assert_eq!(v[at], 0x04, "an OCTET STRING cookie");
    let len = v[at + 1] as usize;
    v[at + 2..at + 2 + len].to_vec()
}

/// A page of 10 of the singleLevel search of ou=paged (its 25 entries), after `cookie` (empty:
/// the first page).
fn paged_page(cookie: &[u8]) -> String {
    format!(
        "<searchRequest requestID=\"pg\" dn=\"ou=paged,{SUFFIX}\" scope=\"singleLevel\" derefAliases=\"neverDerefAliases\"><control type=\"1.2.840.113556.1.4.319\" criticality=\"true\"><controlValue xsi:type=\"xsd:base64Binary\">{}</controlValue></control><filter><present name=\"cn\"/></filter><attributes><attribute name=\"cn\"/></attributes></searchRequest>",
            paged_value(10, cookie)
    )
}

/// Protects the point of a DSML session: one LDAP connection for all its requests. A paged
/// search of the 25 entries under ou=paged, in pages of 10 across three requests of one session,
/// gets 10, 10 and 5 entries and an empty cookie at the end; the pages are the whole set, once.
/// EndSession then ends the session although its connection is held (a dialog).
#[test]
fn a_paged_search_goes_on_across_the_requests_of_one_session() {
    let b = start();
    let url = b.url("/dsml");
    let r = call(&url, &begin(), &batch(&[paged_page(b"")]));
    let id = expect_ad_session(&r);
    let mut seen: Vec<String> = Vec::new();
    let mut sizes = Vec::new();
    let mut reply = r;
    for n in 0..3 {
        let got = responses(&reply);
        assert_eq!(code(&got[0]).0, 0, "page {n}: {}", reply.describe());
        let found = entries(&got[0]);
        sizes.push(found.len());
        seen.extend(found.into_iter().map(|(dn, _)| dn));
        let cookie = paged_cookie(got[0].child_local("searchResultDone").expect("done"));
        if n == 2 {
            assert!(cookie.is_empty(), "the last page ends the search");
            break;
        }
        assert!(!cookie.is_empty(), "page {n} has a cookie");
        reply = call(&url, &session(&id), &batch(&[paged_page(&cookie)]));
    }
    assert_eq!(sizes, vec![10, 10, 5]);
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), 25, "every entry once");
    // EndSession ends it, its connection (a dialog) with it; the ID is unknown after.
    let r = call(&url, &end(&id), &batch(&[]));
    expect_batch_response(&r);
    assert_eq!(expect_ad_session(&r), id, "{}", r.describe());
    expect_fault(
        &call(&url, &session(&id), &batch(&[])),
        DsmlFault::BadSessionRequest,
    );
}

/// Protects a large result: a search of the 10 000 entries under ou=bulk comes back whole, in
/// one reply, each entry with its attribute.
#[test]
fn a_search_of_ten_thousand_entries_comes_back_whole() {
    let b = start();
    let url = b.url("/dsml");
    let r = call(
        &url,
        "",
        &batch(&[search(
            "bulk",
            &format!("ou=bulk,{SUFFIX}"),
            "singleLevel",
            "<present name=\"objectClass\"/>",
            &["description"],
            "",
        )]),
    );
    let got = responses(&r);
    assert_eq!(
        code(&got[0]).0,
        0,
        "{}",
        &r.describe()[..500.min(r.describe().len())]
    );
    let found = entries(&got[0]);
    assert_eq!(found.len(), 10_000);
    assert!(found
        .iter()
        .all(|(_, attrs)| attrs.len() == 1 && attrs[0].0 == "description"));
}

/// A broker whose ldap class binds as carol, whom the test directory limits as Active Directory
/// limits everyone: an unpaged search stops at 1 000 entries, a paged one is not limited.
fn start_as_carol(extra: &str) -> BrokerProcess {
    let keys = format!(
        "directory = {:?}\nbind_dn = \"uid=carol,ou=people,{SUFFIX}\"\nbind_password = \"carol-pw\"\n{extra}",
        directory_url()
    );
    BrokerProcess::start(&DsmlEndpoint::new().ldap(&keys).config().render())
}

fn bulk_search(extra: &str, controls: &str) -> String {
    format!(
        "<searchRequest requestID=\"bulk\" dn=\"ou=bulk,{SUFFIX}\" scope=\"singleLevel\" derefAliases=\"neverDerefAliases\" {extra}>{controls}<filter><present name=\"objectClass\"/></filter><attributes><attribute name=\"cn\"/></attributes></searchRequest>"
    )
}

/// (entries, result code, response controls) of the one searchResponse of a reply.
fn bulk_result(r: &SoapReply) -> (usize, u32, Vec<String>) {
    let got = responses(r);
    assert_eq!(got.len(), 1, "one searchResponse");
    let done = got[0].child_local("searchResultDone").expect("done");
    let controls = done
        .elements()
        .filter(|c| c.local == "control")
        .filter_map(|c| c.attr("type").map(str::to_string))
        .collect();
    (entries(&got[0]).len(), code(&got[0]).0, controls)
}

/// Protects windowed searches (the adapter's bound on what the LDAP client holds): a search
/// without sizeLimit or controls is asked for in pages of `search_window` entries, which the
/// directory's limit on unpaged searches shows: carol gets all 10 000 entries in one
/// searchResponse with resultCode 0 and no paged-results control of the adapter's. With the
/// window off, with a sizeLimit, or with a control of the client's own, the search is sent as it
/// came and the directory stops it at 1 000 (sizeLimitExceeded), as it would a direct client's.
#[test]
fn a_search_without_a_size_limit_is_asked_for_in_windows_and_answered_as_one() {
    let windowed = start_as_carol("");
    let url = windowed.url("/dsml");
    let (n, rc, controls) = bulk_result(&call(&url, "", &batch(&[bulk_search("", "")])));
    assert_eq!((n, rc), (10_000, 0), "in windows of 500");
    assert!(
        controls.is_empty(),
        "the window's control is the adapter's: {controls:?}"
    );
    let (n, rc, _) = bulk_result(&call(
        &url,
        "",
        &batch(&[bulk_search("sizeLimit=\"5000\"", "")]),
    ));
    assert_eq!((n, rc), (1_000, 4), "a sizeLimit: sent as it came");
    let manage_dsa_it = "<control type=\"2.16.840.1.113730.3.4.2\" criticality=\"false\"/>";
    let (n, rc, _) = bulk_result(&call(&url, "", &batch(&[bulk_search("", manage_dsa_it)])));
    assert_eq!(
        (n, rc),
        (1_000, 4),
        "a control of the client's: sent as it came"
    );
    // In a parallel batch too (its one search).
    let parallel = batch_with("processing=\"parallel\"", &[bulk_search("", "")]);
    let (n, rc, _) = bulk_result(&call(&url, "", &parallel));
    assert_eq!((n, rc), (10_000, 0), "parallel, in windows");

    let whole = start_as_carol("search_window = 0");
    let url = whole.url("/dsml");
    let (n, rc, _) = bulk_result(&call(&url, "", &batch(&[bulk_search("", "")])));
    assert_eq!((n, rc), (1_000, 4), "search_window = 0: sent as it came");
}

/// Protects a session's own paged search from the adapter's windows: while the session pages a
/// search of its own on its connection (a directory keeps one paged search per connection), a
/// large search in between is sent whole, and the session's next page still follows its cookie.
#[test]
fn a_session_s_own_paged_search_goes_on_past_a_large_search() {
    let b = start();
    let url = b.url("/dsml");
    let r = call(&url, &begin(), &batch(&[paged_page(b"")]));
    let id = expect_ad_session(&r);
    let first = responses(&r);
    assert_eq!(entries(&first[0]).len(), 10, "{}", r.describe());
    let cookie = paged_cookie(first[0].child_local("searchResultDone").expect("done"));
    let (n, rc, _) = bulk_result(&call(&url, &session(&id), &batch(&[bulk_search("", "")])));
    assert_eq!((n, rc), (10_000, 0));
    let r = call(&url, &session(&id), &batch(&[paged_page(&cookie)]));
    let second = responses(&r);
    assert_eq!(
        code(&second[0]).0,
        0,
        "the cookie still holds: {}",
        r.describe()
    );
    assert_eq!(entries(&second[0]).len(), 10, "{}", r.describe());
    // The session's paging done (to its end), its searches get windows again.
    let cookie = paged_cookie(second[0].child_local("searchResultDone").expect("done"));
    let r = call(&url, &session(&id), &batch(&[paged_page(&cookie)]));
    let last = responses(&r);
    assert!(paged_cookie(last[0].child_local("searchResultDone").expect("done")).is_empty());
    let (n, rc, _) = bulk_result(&call(&url, &session(&id), &batch(&[bulk_search("", "")])));
    assert_eq!((n, rc), (10_000, 0));
}

fn slapd_script(args: &[&str]) -> String {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/slapd.sh");
    let out = Command::new("bash")
        .arg(script)
        .args(args)
        .env_remove("BROKER_TEST_LDAP")
        .output()
        .expect("bash scripts/slapd.sh");
    assert!(
        out.status.success(),
        "slapd.sh {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A slapd of the test's own, stopped and removed when dropped.
struct OwnDirectory {
    url: String,
    dir: String,
}

impl OwnDirectory {
    fn start() -> OwnDirectory {
        let exports = slapd_script(&["start"]);
        let value = |key: &str| {
            exports
                .split_whitespace()
                .find_map(|w| w.strip_prefix(&format!("{key}=")))
                .unwrap_or_else(|| panic!("{key} in {exports}"))
                .to_string()
        };
        OwnDirectory {
            url: value("BROKER_TEST_LDAP"),
            dir: value("BROKER_TEST_LDAP_DIR"),
        }
    }
}

impl Drop for OwnDirectory {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/slapd.sh"))
            .args(["stop", &self.dir])
            .status();
    }
}

/// Protects the directory going away and coming back: while slapd is down every batch is
/// answered (HTTP 200) with `errorResponse type="couldNotConnect"`, with its requestID; once it
/// is up again, the next batch succeeds without restarting the broker; a session whose
/// connection dropped is told `connectionClosed`, and its next request works on a fresh one.
#[test]
fn the_directory_going_down_and_coming_back() {
    let own = OwnDirectory::start();
    let b = start_on(&own.url);
    let url = b.url("/dsml");
    let base = || {
        batch(&[search(
            "x",
            SUFFIX,
            "baseObject",
            "<present name=\"objectClass\"/>",
            &["dc"],
            "",
        )])
    };
    assert_eq!(code(&responses(&call(&url, "", &base()))[0]).0, 0);
    let r = call(&url, &begin(), &base());
    let id = expect_ad_session(&r);

    slapd_script(&["down", &own.dir]);
    let r = call(&url, "", &base());
    let got = responses(&r);
    assert_eq!(
        (
            got[0].local.as_str(),
            got[0].attr("type"),
            got[0].attr("requestID")
        ),
        ("errorResponse", Some("couldNotConnect"), Some("x")),
        "{}",
        r.describe()
    );
    let r = call(&url, &session(&id), &base());
    let got = responses(&r);
    assert_eq!(got[0].local, "errorResponse", "{}", r.describe());
    assert!(
        matches!(
            got[0].attr("type"),
            Some("connectionClosed" | "couldNotConnect")
        ),
        "{}",
        r.describe()
    );
    assert_eq!(expect_ad_session(&r), id, "the session lives on");

    slapd_script(&["up", &own.dir]);
    let r = call(&url, "", &base());
    assert_eq!(code(&responses(&r)[0]).0, 0, "back: {}", r.describe());
    let r = call(&url, &session(&id), &base());
    assert_eq!(
        code(&responses(&r)[0]).0,
        0,
        "the session's next request: {}",
        r.describe()
    );
}

/// A broker whose `/dsml` endpoint takes the client's Basic credentials (`auth = "directory"`)
/// and whose ldap class binds as the client (`bind = "principal"`) with these keys.
fn start_binding_as_client(keys: &str) -> BrokerProcess {
    let mut endpoint = DsmlEndpoint::new().ldap(&format!(
        "directory = {:?}\nbind = \"principal\"\n{keys}",
        directory_url()
    ));
    endpoint.auth = Some("directory".to_string());
    BrokerProcess::start(&endpoint.config().render())
}

/// POST as `user:password` (None: no credentials).
fn call_as(url: &str, login: Option<(&str, &str)>, header: &str, body: &str) -> SoapReply {
    let auth = login.map(|(u, p)| broker_tests::dsml::basic(u, p));
    let headers: Vec<(&str, &str)> = auth.iter().map(|a| ("Authorization", a.as_str())).collect();
    broker_tests::dsml::post_with(
        &broker_tests::http::Client::new(),
        url,
        Some("text/xml; charset=utf-8"),
        &headers,
        &broker_tests::dsml::envelope(header, body),
    )
}

/// WhoAmI's answer in a reply (`dn:…`), or the errorResponse type when there is one instead.
fn whoami(r: &SoapReply) -> String {
    let got = responses(r);
    let first = got
        .first()
        .unwrap_or_else(|| panic!("no response: {}", r.describe()));
    if first.local == "errorResponse" {
        return format!("error:{}", first.attr("type").unwrap_or_default());
    }
    first
        .child_local("response")
        .map(|v| v.text())
        .and_then(|b| {
            base64::engine::general_purpose::STANDARD
                .decode(b.trim())
                .ok()
        })
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_else(|| format!("no WhoAmI answer: {}", r.describe()))
}

fn whoami_batch() -> String {
    batch(&["<extendedRequest requestID=\"w\"><requestName>1.3.6.1.4.1.4203.1.11.3</requestName></extendedRequest>".to_string()])
}

/// Protects binding as the client with a DN template: each request outside a session is bound as
/// its own client (two users one after the other on the pooled connections); a wrong password is
/// `authenticationFailed` and runs nothing; no credentials at all get HTTP 401. In a session the
/// bind holds across requests: the session's later requests run as its client, a later request
/// with a wrong password is refused without running (and without costing the session its
/// connection: its paged search goes on), another user cannot use the session.
#[test]
fn a_session_binds_as_its_client_and_the_bind_holds_across_requests() {
    let b = start_binding_as_client(&format!(
        "bind_dn_template = \"uid={{user}},ou=people,{SUFFIX}\""
    ));
    let url = b.url("/dsml");
    let ann = format!("dn:uid=ann,ou=people,{SUFFIX}");
    let bob = format!("dn:uid=bob,ou=people,{SUFFIX}");
    assert_eq!(
        whoami(&call_as(&url, Some(("ann", "ann-pw")), "", &whoami_batch())),
        ann
    );
    assert_eq!(
        whoami(&call_as(&url, Some(("bob", "bob-pw")), "", &whoami_batch())),
        bob
    );
    assert_eq!(
        whoami(&call_as(&url, Some(("ann", "ann-pw")), "", &whoami_batch())),
        ann
    );
    assert_eq!(
        whoami(&call_as(&url, Some(("ann", "wrong")), "", &whoami_batch())),
        "error:authenticationFailed"
    );
    assert_eq!(
        whoami(&call_as(&url, Some(("ann", "")), "", &whoami_batch())),
        "error:authenticationFailed",
        "an empty password is no anonymous way in"
    );
    let r = call_as(&url, None, "", &whoami_batch());
    assert_eq!(r.status(), 401, "{}", r.describe());

    // The session's first request: WhoAmI and the first page of a paged search.
    let first = batch(&[
        "<extendedRequest requestID=\"w\"><requestName>1.3.6.1.4.1.4203.1.11.3</requestName></extendedRequest>".to_string(),
        paged_page(b""),
    ]);
    let r = call_as(&url, Some(("ann", "ann-pw")), &begin(), &first);
    assert_eq!(whoami(&r), ann);
    let id = expect_ad_session(&r);
    let cookie = paged_cookie(
        responses(&r)[1]
            .child_local("searchResultDone")
            .expect("done"),
    );
    // A request of the session, sent with these credentials.
    let in_session = |user: &str, password: &str, body: &str| {
        call_as(&url, Some((user, password)), &session(&id), body)
    };
    for _ in 0..2 {
        let r = in_session("ann", "ann-pw", &whoami_batch());
        assert_eq!(whoami(&r), ann, "the session's bind holds");
    }
    let r = in_session("ann", "not-hers", &whoami_batch());
    assert_eq!(whoami(&r), "error:authenticationFailed", "{}", r.describe());
    let r = in_session("bob", "bob-pw", &whoami_batch());
    expect_fault(&r, DsmlFault::BadSessionRequest);
    let r = in_session("ann", "ann-pw", &whoami_batch());
    assert_eq!(whoami(&r), ann, "the session carries on as ann");
    // Its connection is still the one it began with: the paged search goes on.
    let r = in_session("ann", "ann-pw", &batch(&[paged_page(&cookie)]));
    let got = responses(&r);
    assert_eq!(code(&got[0]).0, 0, "{}", r.describe());
    assert_eq!(
        entries(&got[0]).len(),
        10,
        "the second page, on the same connection"
    );
}

/// Protects binding as the client with a lookup: the manager finds the client's entry by
/// `(uid={user})` and the connection binds as it; a user name with filter characters is a value,
/// not syntax (`*` matches no one rather than everyone).
#[test]
fn a_client_s_dn_can_be_looked_up() {
    let b = start_binding_as_client(&format!(
        "bind_search_base = \"ou=people,{SUFFIX}\"\nbind_search_filter = \"(uid={{user}})\"\nbind_dn = \"cn=admin,{SUFFIX}\"\nbind_password = \"secret\""
    ));
    let url = b.url("/dsml");
    assert_eq!(
        whoami(&call_as(
            &url,
            Some(("carol", "carol-pw")),
            "",
            &whoami_batch()
        )),
        format!("dn:uid=carol,ou=people,{SUFFIX}")
    );
    assert_eq!(
        whoami(&call_as(&url, Some(("*", "carol-pw")), "", &whoami_batch())),
        "error:authenticationFailed"
    );
}

/// Protects DSML sessions across brokers: the session's connection is a dialog held by the broker
/// that began it, so a request arriving at another broker is forwarded there (a paged search
/// begun on b1 goes on through b2). When b1 dies (`kill -9`), the session's next request gets
/// `errorResponse type="connectionClosed"` in a batchResponse (HTTP 200, the session header
/// still there); the session's next request after that, and a new BeginSession, work on b2.
#[test]
fn a_session_s_connection_lives_on_one_broker_and_its_loss_is_reported() {
    let daemon = broker_tests::daemon::Daemon::start();
    let keys = format!(
        "directory = {:?}\nbind_dn = \"cn=admin,{SUFFIX}\"\nbind_password = \"secret\"\nconnect_timeout = \"2s\"\nrequest_timeout = \"20s\"",
        directory_url()
    );
    let mut brokers: Vec<BrokerProcess> = (1..=2)
        .map(|i| {
            let config = DsmlEndpoint::new()
                .ldap(&keys)
                .config()
                .broker_id(&format!("b{i}"))
                .store_url(&daemon.url())
                .store_extra("turn_lease = \"40s\"")
                .sweep_interval("500ms")
                .cluster("secret = \"dsml-cluster-secret-0123456789abcdef\"\nheartbeat = \"200ms\"\nlease = \"1s\"\nrecovery_interval = \"2s\"\nconnect_timeout = \"500ms\"\nforward_timeout = \"20s\"");
            BrokerProcess::start(&config.render())
        })
        .collect();
    let (b1, b2) = (brokers[0].url("/dsml"), brokers[1].url("/dsml"));
    let r = call(&b1, &begin(), &batch(&[paged_page(b"")]));
    let id = expect_ad_session(&r);
    let got = responses(&r);
    let cookie = paged_cookie(got[0].child_local("searchResultDone").expect("done"));
    let r = call(&b2, &session(&id), &batch(&[paged_page(&cookie)]));
    let got = responses(&r);
    assert_eq!(
        code(&got[0]).0,
        0,
        "forwarded to b1's connection: {}",
        r.describe()
    );
    assert_eq!(
        entries(&got[0]).len(),
        10,
        "the second page: {}",
        r.describe()
    );

    brokers[0].kill9();
    let base = || {
        batch(&[search(
            "x",
            SUFFIX,
            "baseObject",
            "<present name=\"objectClass\"/>",
            &["dc"],
            "",
        )])
    };
    let lost = broker_tests::wait::until(
        std::time::Duration::from_secs(20),
        "b2 reporting the lost connection",
        || {
            let r = call(&b2, &session(&id), &base());
            if r.http.text().contains("connectionClosed") {
                Some(r)
            } else {
                // Until b2 sees b1 gone, the request may wait for b1 or be refused.
                None
            }
        },
    );
    assert_eq!(lost.status(), 200, "{}", lost.describe());
    let got = responses(&lost);
    assert_eq!(
        (got[0].local.as_str(), got[0].attr("type")),
        ("errorResponse", Some("connectionClosed")),
        "{}",
        lost.describe()
    );
    assert_eq!(expect_ad_session(&lost), id, "the session lives on");
    let r = call(&b2, &session(&id), &base());
    assert_eq!(
        code(&responses(&r)[0]).0,
        0,
        "a fresh connection: {}",
        r.describe()
    );
    let r = call(&b2, &begin(), &base());
    assert_eq!(
        code(&responses(&r)[0]).0,
        0,
        "a new session: {}",
        r.describe()
    );
}

/// Protects the search's own limits and options: sizeLimit stops at that many entries with
/// sizeLimitExceeded (4); typesOnly returns the attribute names without values; an attribute
/// selection of `1.1` returns no attributes.
#[test]
fn size_limit_and_types_only_reach_the_directory() {
    let b = start();
    let url = b.url("/dsml");
    let r = call(
        &url,
        "",
        &batch_with(
            "onError=\"resume\"",
            &[
                search(
                    "size",
                    &format!("ou=paged,{SUFFIX}"),
                    "singleLevel",
                    "<present name=\"cn\"/>",
                    &["cn"],
                    "sizeLimit=\"5\"",
                ),
                search(
                    "types",
                    &format!("uid=bob,ou=people,{SUFFIX}"),
                    "baseObject",
                    "<present name=\"objectClass\"/>",
                    &["mail", "sn"],
                    "typesOnly=\"true\"",
                ),
                search(
                    "none",
                    &format!("uid=bob,ou=people,{SUFFIX}"),
                    "baseObject",
                    "<present name=\"objectClass\"/>",
                    &["1.1"],
                    "",
                ),
            ],
        ),
    );
    let got = responses(&r);
    assert_eq!(
        code(&got[0]),
        (4, "sizeLimitExceeded".to_string()),
        "{}",
        r.describe()
    );
    assert_eq!(entries(&got[0]).len(), 5);
    assert_eq!(
        entries(&got[1]),
        vec![(
            format!("uid=bob,ou=people,{SUFFIX}"),
            vec![("mail".to_string(), vec![]), ("sn".to_string(), vec![])]
        )],
        "{}",
        r.describe()
    );
    assert_eq!(
        entries(&got[2]),
        vec![(format!("uid=bob,ou=people,{SUFFIX}"), vec![])]
    );
}
