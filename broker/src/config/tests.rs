//! Unit tests of the configuration: defaults, overrides, and the key each error names.
use super::*;
use adapters::AdapterKind;

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::from_toml("test.toml", text, &Overrides::default())
}

#[test]
fn embedded_default_is_valid() {
    let c = Config::embedded(&Overrides::default()).unwrap();
    assert_eq!(c.broker.listen.to_string(), "127.0.0.1:8080");
    assert_eq!(c.endpoints[0].path, "/soap");
    assert_eq!(c.endpoints[0].session_timeout, Duration::from_secs(1800));
    assert!(c.store.url.starts_with("sled:"));
    assert!(c.store.url.ends_with("/cookies"), "{}", c.store.url);
    assert_eq!(c.services[0].operation, "Echo");
}

#[test]
fn overrides_win() {
    let o = Overrides {
        listen: Some("127.0.0.1:9999".into()),
        store: Some("sled:/tmp/x".into()),
        id: Some("b7".into()),
        data_dir: Some("/tmp/d".into()),
        advertise: Some("http://10.0.0.7:9999".into()),
        admin_listen: None,
    };
    let c = Config::embedded(&o).unwrap();
    assert_eq!(c.broker.listen.port(), 9999);
    assert_eq!(c.broker.advertise, "http://10.0.0.7:9999");
    assert_eq!(c.store.url, "sled:/tmp/x");
    assert_eq!(c.broker.id, "b7");
    match &c.server_classes[0].adapter {
        AdapterKind::Process { command, .. } => assert!(!command[0].contains("{broker_exe}")),
        other => panic!("{other:?}"),
    }
}

#[test]
fn errors_name_file_key_and_problem() {
    let e =
        parse("[[endpoint]]\npath = \"/soap\"\ndialect = \"nonstop\"\nsession_timeout = \"-5m\"\n")
            .unwrap_err();
    assert_eq!(e.file, "test.toml");
    assert_eq!(e.key, "endpoint[0].session_timeout");
    assert!(e.problem.contains("negative"), "{e}");

    let e = parse("[[server_class]]\nname = \"x\"\nadapter = \"process\"\n").unwrap_err();
    assert_eq!(e.key, "server_class[0].command");

    let e = parse(
        "[[server_class]]\nname = \"x\"\ncommand = [\"a\"]\nmin_workers = 5\nmax_workers = 2\n",
    )
    .unwrap_err();
    assert_eq!(e.key, "server_class[0].min_workers");

    let e = parse("[[server_class]]\nname = \"h\"\nadapter = \"http\"\nurls = [\"http://x\"]\ntransactional = true\n").unwrap_err();
    assert_eq!(e.key, "server_class[0].transactional");

    let e = parse("[[service]]\nname = \"Echo\"\nendpoint = \"/nope\"\nserver_class = \"echo\"\n")
        .unwrap_err();
    assert_eq!(e.key, "service[0].endpoint");

    let e = parse("[broker]\nlisten = \"nowhere\"\n").unwrap_err();
    assert_eq!(e.key, "broker.listen");
}

#[test]
fn sweep_rate_has_a_default_and_must_be_positive() {
    let c = Config::embedded(&Overrides::default()).unwrap();
    assert_eq!(c.store.sweep_rate, 5000);
    let c = parse("[store]\nsweep_rate = 50\n").unwrap();
    assert_eq!(c.store.sweep_rate, 50);
    let e = parse("[store]\nsweep_rate = 0\n").unwrap_err();
    assert_eq!(e.key, "store.sweep_rate");
}

#[test]
fn unknown_keys_and_bad_types_are_refused_with_their_line() {
    let e = parse("[broker]\nlisten = \"127.0.0.1:1\"\nlisen = 3\n").unwrap_err();
    assert_eq!((e.key.as_str(), e.line), ("broker.lisen", Some(3)), "{e}");
    assert!(e.problem.contains("lisen"), "{e}");
    assert!(e.to_string().contains("line 3: `lisen = 3`"), "{e}");
    let e = parse("[limits]\nmax_depth = \"deep\"\n").unwrap_err();
    assert_eq!(
        (e.key.as_str(), e.line),
        ("limits.max_depth", Some(2)),
        "{e}"
    );
    let e = parse("[[server_class]]\nname = \"x\"\ncommand = [\"a\"]\nmax_workers = \"many\"\n")
        .unwrap_err();
    assert_eq!(
        (e.key.as_str(), e.line),
        ("server_class[0].max_workers", Some(4)),
        "{e}"
    );
}

#[test]
fn auth_needs_a_readable_credentials_file() {
    let e = parse("[[endpoint]]\npath = \"/soap\"\ndialect = \"nonstop\"\nauth = \"required\"\n")
        .unwrap_err();
    assert_eq!(e.key, "endpoint[0].auth");
    let e = parse("[auth]\ncredentials_file = \"/nonexistent/users\"\n").unwrap_err();
    assert_eq!(e.key, "auth.credentials_file");
    let e = parse("[[endpoint]]\npath = \"/soap\"\ndialect = \"nonstop\"\nauth = \"maybe\"\n")
        .unwrap_err();
    assert_eq!(e.key, "endpoint[0].auth");
}

#[test]
fn dsml_endpoints_get_dsml_defaults_and_nonstop_ones_stay_unlimited() {
    let c = parse(
        "[[endpoint]]\npath = \"/soap\"\ndialect = \"nonstop\"\n[[endpoint]]\npath = \"/dsml\"\ndialect = \"dsml\"\n",
    )
    .unwrap();
    let (n, d) = (&c.endpoints[0], &c.endpoints[1]);
    assert_eq!(n.session_timeout, Duration::from_secs(1800));
    assert_eq!((n.sessions_max, n.sessions_max_per_ip), (0, 0));
    assert!(!n.ip_match && n.auth_match && !n.has_session_limits());
    assert_eq!(d.dialect, DialectKind::Dsml);
    assert_eq!(d.session_timeout, Duration::from_secs(600));
    assert_eq!((d.sessions_max, d.sessions_max_per_ip), (100, 5));
    assert!(d.ip_match && d.auth_match && d.has_session_limits());
    assert_eq!(d.max_requests_per_batch, 1000);

    let c = parse("[[endpoint]]\npath = \"/dsml\"\ndialect = \"dsml\"\nsessions_max = 0\nsessions_max_per_ip = 0\nip_match = false\nauth_match = false\nmax_requests_per_batch = 3\nsession_timeout = \"2s\"\n").unwrap();
    let d = &c.endpoints[0];
    assert!(!d.has_session_limits() && !d.ip_match && !d.auth_match);
    assert_eq!(d.max_requests_per_batch, 3);
    assert_eq!(d.session_timeout, Duration::from_secs(2));

    let e =
        parse("[[endpoint]]\npath = \"/dsml\"\ndialect = \"dsml\"\nmax_requests_per_batch = 0\n")
            .unwrap_err();
    assert_eq!(e.key, "endpoint[0].max_requests_per_batch");
    let e = parse(
        "[[endpoint]]\npath = \"/soap\"\ndialect = \"nonstop\"\nmax_requests_per_batch = 5\n",
    )
    .unwrap_err();
    assert_eq!(e.key, "endpoint[0].max_requests_per_batch");
    assert!(e.problem.contains("dsml"), "{e}");
    let e = parse("[[endpoint]]\npath = \"/dsml\"\ndialect = \"dsml\"\nsessions_max = -1\n")
        .unwrap_err();
    assert_eq!(
        (e.key.as_str(), e.line),
        ("endpoint[0].sessions_max", Some(4)),
        "{e}"
    );
    // sqlsession endpoints need a login, and so credentials; anonymous access is refused.
    let e = parse("[[endpoint]]\npath = \"/q\"\ndialect = \"sqlsession\"\n").unwrap_err();
    assert_eq!(e.key, "endpoint[0].auth");
    let e = parse("[[endpoint]]\npath = \"/q\"\ndialect = \"sqlsession\"\nauth = \"optional\"\n")
        .unwrap_err();
    assert!(e.problem.contains("requires auth = \"required\""), "{e}");
    let e =
        parse("[[endpoint]]\npath = \"/q\"\ndialect = \"nonstop\"\nsessions = true\n").unwrap_err();
    assert_eq!(e.key, "endpoint[0].sessions");
}

#[test]
fn the_embedded_default_serves_dsml() {
    let c = Config::embedded(&Overrides::default()).unwrap();
    let d = c
        .endpoints
        .iter()
        .find(|e| e.path == "/dsml")
        .expect("a /dsml endpoint");
    assert_eq!(d.dialect, DialectKind::Dsml);
    assert_eq!((d.sessions_max, d.sessions_max_per_ip), (100, 5));
    assert!(c.services.iter().any(|s| s.name == "batchRequest"
        && s.endpoint == "/dsml"
        && s.server_class == "directory"));
}

#[test]
fn cluster_settings_are_validated_and_default_sanely() {
    let c = Config::embedded(&Overrides::default()).unwrap();
    assert_eq!(c.cluster.heartbeat, Duration::from_secs(1));
    assert_eq!(c.cluster.lease, Duration::from_secs(5));
    // The longest request_timeout of the default classes is 3m (echo).
    assert_eq!(c.store.turn_lease, Duration::from_secs(210));
    assert_eq!(c.cluster.forward_timeout, Duration::from_secs(300 + 210));
    if std::env::var(CLUSTER_SECRET_ENV).is_err() {
        assert!(c.cluster.secret.is_none());
    }

    let c = parse("[cluster]\nsecret = \"0123456789abcdef\"\nheartbeat = \"200ms\"\nlease = \"1s\"\n[store]\nturn_lease = \"4s\"\n").unwrap();
    assert!(c
        .cluster
        .secret
        .as_ref()
        .is_some_and(|s| s.matches(b"0123456789abcdef")));
    assert_eq!(c.cluster.secret_source, "cluster.secret");
    assert_eq!(c.cluster.lease, Duration::from_secs(1));
    assert_eq!(c.store.turn_lease, Duration::from_secs(4));

    let e = parse("[cluster]\nsecret = \"short\"\n").unwrap_err();
    assert_eq!(e.key, "cluster.secret");
    assert!(e.problem.contains("at least 16"), "{e}");
    let e = parse("[cluster]\nheartbeat = \"1s\"\nlease = \"2s\"\n").unwrap_err();
    assert_eq!(e.key, "cluster.lease");
    assert!(e.problem.contains("two heartbeats"), "{e}");
    let e = parse("[cluster]\nsecret = \"0123456789abcdef\"\nsecret_file = \"/x\"\n").unwrap_err();
    assert_eq!(e.key, "cluster.secret");
    let e = parse("[cluster]\nsecret_file = \"/nonexistent/secret\"\n").unwrap_err();
    assert_eq!(e.key, "cluster.secret_file");

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("secret");
    std::fs::write(&file, "from-a-file-0123456789\n").unwrap();
    let c = parse(&format!(
        "[cluster]\nsecret_file = {:?}\n",
        file.display().to_string()
    ))
    .unwrap();
    assert!(c
        .cluster
        .secret
        .as_ref()
        .is_some_and(|s| s.matches(b"from-a-file-0123456789")));

    // turn_lease must exceed every request_timeout.
    let e = parse("[store]\nturn_lease = \"10s\"\n[[server_class]]\nname = \"x\"\ncommand = [\"a\"]\nrequest_timeout = \"10s\"\n").unwrap_err();
    assert_eq!(e.key, "store.turn_lease");
    assert!(e.problem.contains("request_timeout"), "{e}");

    let e = parse("[broker]\nid = \"a/b\"\n").unwrap_err();
    assert_eq!(e.key, "broker.id");
    let e = parse("[broker]\nadvertise = \"https://x:1\"\n").unwrap_err();
    assert_eq!(e.key, "broker.advertise");
    // Sharing a store, the wildcard listen address is no address for the other brokers.
    let e =
        parse("[broker]\nlisten = \"0.0.0.0:8080\"\n[store]\nurl = \"postgres://u:secret@db/x\"\n")
            .unwrap_err();
    assert_eq!(e.key, "broker.advertise");
    assert!(!e.to_string().contains("secret"), "{e}");
    assert!(parse("[broker]\nlisten = \"0.0.0.0:8080\"\n").is_ok());
    let e = parse("[[endpoint]]\npath = \"/_cluster/x\"\ndialect = \"nonstop\"\n").unwrap_err();
    assert_eq!(e.key, "endpoint[0].path");
}

#[test]
fn session_timeout_is_clamped() {
    let c = parse(
        "[[endpoint]]\npath = \"/soap\"\ndialect = \"nonstop\"\nsession_timeout = \"500days\"\n",
    )
    .unwrap();
    assert_eq!(c.endpoints[0].session_timeout, MAX_SESSION_TIMEOUT);
}

#[test]
fn an_empty_file_gives_the_defaults_and_serves_nothing() {
    let c = parse("").unwrap();
    assert!(c.endpoints.is_empty() && c.server_classes.is_empty() && c.services.is_empty());
    assert_eq!(c.broker.listen.to_string(), "127.0.0.1:8080");
    assert_eq!(c.broker.data_dir, PathBuf::from("./broker-data"));
    assert_eq!(c.store.url, "sled:./broker-data/cookies");
    assert_eq!(c.log.level, "info");
    // No request_timeout to exceed: the lease is the 30 s margin alone.
    assert_eq!(c.store.turn_lease, Duration::from_secs(30));
    // A file of comments only is the same.
    let c = parse("# nothing here\n\n").unwrap();
    assert!(c.endpoints.is_empty());
}

#[test]
fn a_missing_required_key_is_named_with_its_table_line() {
    let e = parse("[broker]\nid = \"b\"\n\n[[endpoint]]\ndialect = \"dsml\"\n").unwrap_err();
    assert_eq!(e.key, "endpoint[0].path");
    assert_eq!(e.line, Some(4));
    assert!(e.problem.starts_with("is required"), "{e}");
}

#[test]
fn the_embedded_record_sample_is_the_copybook_in_the_repository() {
    // The default configuration holds the copybook inline (it has no file beside it); the
    // repository's file is the one people read, so they must not drift apart.
    let copybook = include_str!("../../../records/samples/acctinq.cpy");
    assert!(DEFAULT_CONFIG.contains(copybook));
    let c = Config::embedded(&Overrides::default()).unwrap();
    let inquiry = c
        .services
        .iter()
        .find(|s| s.name == "AccountInquiry")
        .and_then(|s| s.record.clone())
        .expect("the embedded default has the record sample");
    assert_eq!(inquiry.request.name, "ACCTINQ-REQUEST");
    assert_eq!(inquiry.request.root.size, 22);
    assert_eq!(inquiry.namespace, "urn:soap-broker:soap");
    assert_eq!(inquiry.replies.len(), 2);
    assert!(inquiry.replies[1].rule.fault && inquiry.replies[1].rule.default);
}

#[test]
fn a_layouts_file_is_read_relative_to_the_configuration_and_by_its_syntax() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("q.cpy"),
        "       01  Q.\n           05  K  PIC 9(4).\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("a.toml"),
        "[[layout]]\nname = \"A\"\nfields = [{ name = \"S\", type = \"string\", length = 2 }]\n",
    )
    .unwrap();
    let service = |file: &str, request: &str| {
        format!(
            "[[endpoint]]\npath = \"/soap\"\ndialect = \"nonstop\"\n[[server_class]]\nname = \"r\"\ncommand = [\"a\"]\npayload = \"record\"\n[[service]]\nname = \"Q\"\nendpoint = \"/soap\"\nserver_class = \"r\"\n[service.record]\nlayouts_file = \"{file}\"\nrequest = \"{request}\"\n[[service.record.reply]]\nlayout = \"{request}\"\n"
        )
    };
    let path = dir.path().join("broker.toml");
    for (file, request, size) in [("q.cpy", "Q", 4), ("a.toml", "A", 2)] {
        std::fs::write(&path, service(file, request)).unwrap();
        let c = Config::load(&path, &Overrides::default()).unwrap();
        let record = c.services[0].record.clone().unwrap();
        assert_eq!(record.request.root.size, size, "{file}");
    }
    // A field list's error names the key and the field.
    std::fs::write(
        dir.path().join("bad.toml"),
        "[[layout]]\nname = \"A\"\nfields = [{ name = \"S\", type = \"text\", length = 2 }]\n",
    )
    .unwrap();
    std::fs::write(&path, service("bad.toml", "A")).unwrap();
    let e = Config::load(&path, &Overrides::default()).unwrap_err();
    assert_eq!(e.key, "service[0].record.layouts_file");
    assert!(e.problem.contains('S'), "{e}");
}
