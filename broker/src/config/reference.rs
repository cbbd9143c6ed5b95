//! `docs/configuration.md` checked against the code, so that the reference cannot drift:
//!
//! - the keys: every field of every section struct has a row in the doc, every row names a field,
//!   and every key of `default_config.toml` (set or commented out) has a row;
//! - the defaults: a default written in `code` in the doc is set explicitly in a minimal file, and
//!   the result must be the same `Config` as the file leaving the key out.
//!
//! The field names come from serde itself (a deserializer that only records the `fields` a
//! derived `Deserialize` asks for), so a key added to a struct fails here until it is documented.

use super::sections::*;
use super::service::*;
use super::*;
use serde::de::{self, Deserialize, Deserializer, Visitor};
use std::collections::BTreeSet;

const DOC: &str = include_str!("../../../docs/configuration.md");

/// Sections written as arrays of tables (`[[endpoint]]`), whose keys the doc writes `endpoint[].path`.
const ARRAYS: [&str; 4] = [
    "endpoint",
    "server_class",
    "service",
    "server_class.methods",
];

// ---- the keys the structs accept -----------------------------------------------------------------

/// The error that ends a [`FieldNames`] run.
#[derive(Debug)]
struct Stop;

impl std::fmt::Display for Stop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("stop")
    }
}

impl std::error::Error for Stop {}

impl de::Error for Stop {
    fn custom<T: std::fmt::Display>(_: T) -> Self {
        Stop
    }
}

/// A deserializer that records the field names a struct's `Deserialize` announces, then stops.
struct FieldNames<'a>(&'a mut Vec<&'static str>);

impl<'de> Deserializer<'de> for FieldNames<'_> {
    type Error = Stop;

    fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Stop> {
        Err(Stop)
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        _visitor: V,
    ) -> Result<V::Value, Stop> {
        self.0.extend_from_slice(fields);
        Err(Stop)
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf option
        unit unit_struct newtype_struct seq tuple tuple_struct map enum identifier ignored_any
    }
}

fn fields_of<'de, T: Deserialize<'de>>() -> Vec<&'static str> {
    let mut names = Vec::new();
    let _ = T::deserialize(FieldNames(&mut names));
    names
}

/// Every key the structs accept, written as the doc writes it.
fn struct_keys() -> BTreeSet<String> {
    let sections: Vec<(&str, Vec<&'static str>)> = vec![
        ("broker", fields_of::<BrokerSection>()),
        ("log", fields_of::<LogSection>()),
        ("store", fields_of::<StoreSection>()),
        ("limits", fields_of::<LimitsSection>()),
        ("auth", fields_of::<AuthSection>()),
        ("cluster", fields_of::<ClusterSection>()),
        ("admin", fields_of::<super::admin::AdminSection>()),
        ("endpoint", fields_of::<EndpointSection>()),
        ("server_class", fields_of::<adapters::ServerClassSection>()),
        ("service", fields_of::<ServiceSection>()),
    ];
    let listed: Vec<&str> = sections.iter().map(|(s, _)| *s).collect();
    assert_eq!(
        listed,
        fields_of::<FileSections>(),
        "a section was added to FileSections: list it here"
    );
    let mut keys = BTreeSet::new();
    // Tables nested in a section's tables.
    let nested = [
        (
            "server_class.methods",
            fields_of::<adapters::config::SqlMethodSection>(),
        ),
        ("service.record", fields_of::<RecordSection>()),
        ("service.record.reply", fields_of::<ReplySection>()),
    ];
    for (section, fields) in sections.into_iter().chain(nested) {
        assert!(!fields.is_empty(), "no fields found for {section}");
        for f in fields {
            keys.insert(doc_key(section, f));
        }
    }
    keys
}

fn doc_key(section: &str, field: &str) -> String {
    // The tables of an array's element (`[service.record]` belongs to the last `[[service]]`).
    if let Some(table) = section.strip_prefix("service.") {
        let table = table.replace("reply", "reply[]");
        return format!("service[].{table}.{field}");
    }
    if ARRAYS.contains(&section) {
        format!("{section}[].{field}")
    } else {
        format!("{section}.{field}")
    }
}

// ---- the doc's rows ------------------------------------------------------------------------------

struct Row {
    key: String,
    kind: String,
    default: String,
}

/// The rows of the doc's key tables: `| `key` | type | default | meaning |`.
fn doc_rows() -> Vec<Row> {
    DOC.lines()
        .filter(|l| l.starts_with("| `"))
        .map(|l| {
            let cells: Vec<&str> = l.trim_matches('|').split(" | ").map(str::trim).collect();
            assert!(cells.len() >= 4, "a row of four cells: {l}");
            Row {
                key: cells[0].trim_matches('`').to_string(),
                kind: cells[1].to_string(),
                default: cells[2].to_string(),
            }
        })
        .collect()
}

/// The literal defaults of a row: `` `30m` (nonstop), `600s` (dsml) `` → [("30m", Some("nonstop")),
/// ("600s", Some("dsml"))]; a default in words gives none.
fn literal_defaults(default: &str) -> Vec<(String, Option<String>)> {
    if !default.starts_with('`') {
        return Vec::new();
    }
    default
        .split(", ")
        .map(|part| {
            let rest = part
                .strip_prefix('`')
                .unwrap_or_else(|| panic!("{default:?}: each default in `code`"));
            let (value, after) = rest
                .split_once('`')
                .unwrap_or_else(|| panic!("{default:?}: an unclosed `"));
            let qualifier = after
                .trim()
                .strip_prefix('(')
                .and_then(|q| q.strip_suffix(')'))
                .map(str::to_string);
            assert!(
                qualifier.is_some() || after.trim().is_empty(),
                "{default:?}: a default is `value` or `value` (dialect)"
            );
            (value.to_string(), qualifier)
        })
        .collect()
}

/// The value as TOML, by the type the doc gives.
fn toml_value(kind: &str, value: &str) -> String {
    match kind {
        "string" | "duration" => format!("{value:?}"),
        "integer" | "boolean" | "list of strings" | "table of strings" | "list of tables" => {
            value.to_string()
        }
        other => panic!("unknown type {other:?} in docs/configuration.md"),
    }
}

/// A minimal valid file whose last table is the key's own, so that a line appended to it sets the
/// key. `dialect` picks the endpoint's dialect where defaults depend on it.
fn minimal_file(key: &str, dialect: Option<&str>) -> String {
    let section = key.split(['.', '[']).next().unwrap_or("");
    let dialect = dialect.unwrap_or("nonstop");
    // sqlsession requires a login, and so credentials (before the endpoint: the checks append to it).
    let users = if dialect == "sqlsession" {
        "[auth]\nusers = [\"u:$argon2id$v=19$m=19456,t=2,p=1$zqVWenL7h7AFMHPMQnMHiw$yyjy250t1KKYcHG+WpeoBqhkbbfLRyqfCmsMgWQoFBM\"]\n"
    } else {
        ""
    };
    let endpoint = format!("{users}[[endpoint]]\npath = \"/e\"\ndialect = \"{dialect}\"\n");
    // An ldap-only key's default is checked on an ldap class.
    let class = if matches!(
        key,
        "server_class[].connect_timeout" | "server_class[].search_window"
    ) {
        "[[server_class]]\nname = \"c\"\nadapter = \"ldap\"\ndirectory = \"ldap://127.0.0.1:1\"\n"
    } else {
        "[[server_class]]\nname = \"c\"\ncommand = [\"a\"]\n"
    };
    // A record service's keys, on a record class (the reply's last, so its keys can be appended).
    if let Some(rest) = key.strip_prefix("service[].record.") {
        let reply = if rest.starts_with("reply[].") {
            ""
        } else {
            "[[service.record.reply]]\nlayout = \"R\"\n"
        };
        let record = format!(
            "{endpoint}[[server_class]]\nname = \"c\"\ncommand = [\"a\"]\npayload = \"record\"\n[[service]]\nname = \"S\"\nendpoint = \"/e\"\nserver_class = \"c\"\n{reply}[service.record]\nrequest = \"R\"\nlayouts = \"01 R.\\n 05 F PIC X.\"\n"
        );
        return if reply.is_empty() {
            format!("{record}[[service.record.reply]]\nlayout = \"R\"\n")
        } else {
            record
        };
    }
    match section {
        "endpoint" => endpoint,
        "server_class" => class.to_string(),
        "service" => format!(
            "{endpoint}{class}[[service]]\nname = \"S\"\nendpoint = \"/e\"\nserver_class = \"c\"\n"
        ),
        table => format!("[{table}]\n"),
    }
}

fn parsed(text: &str) -> String {
    match Config::from_toml("reference.toml", text, &Overrides::default()) {
        Ok(c) => format!("{c:#?}"),
        Err(e) => panic!("{e}\nin:\n{text}"),
    }
}

// ---- the checks ---------------------------------------------------------------------------------

#[test]
fn every_key_the_structs_accept_is_documented_and_no_other() {
    let doc: BTreeSet<String> = doc_rows().into_iter().map(|r| r.key).collect();
    let code = struct_keys();
    let undocumented: Vec<&String> = code.difference(&doc).collect();
    let unknown: Vec<&String> = doc.difference(&code).collect();
    assert!(
        undocumented.is_empty() && unknown.is_empty(),
        "docs/configuration.md and the configuration differ:\n  keys without a row: {undocumented:?}\n  rows no struct accepts: {unknown:?}"
    );
    assert_eq!(
        doc.len(),
        doc_rows().len(),
        "a key has two rows in docs/configuration.md"
    );
}

#[test]
fn every_key_of_the_default_file_is_documented() {
    let doc: BTreeSet<String> = doc_rows().into_iter().map(|r| r.key).collect();
    // Keys set or commented out (`# queue_limit = 1024`) under a table header, itself set or
    // commented out (`# [cluster]`). The comment block above the first header is prose.
    let mut section: Option<String> = None;
    let mut found = 0;
    for line in DEFAULT_CONFIG.lines() {
        let bare = line.trim_start_matches('#').trim();
        let header = bare.split('#').next().unwrap_or("").trim();
        if header.starts_with('[') && header.ends_with(']') {
            section = Some(header.trim_matches(['[', ']']).to_string());
            continue;
        }
        let Some(section) = &section else { continue };
        let Some((name, _)) = bare.split_once('=') else {
            continue;
        };
        let name = name.trim();
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_lowercase() || c == '_') {
            continue;
        }
        let key = doc_key(section, name);
        assert!(
            doc.contains(&key),
            "default_config.toml has {key:?} ({line:?}), docs/configuration.md has no row for it"
        );
        found += 1;
    }
    assert!(found > 40, "only {found} keys found in default_config.toml");
}

#[test]
fn every_default_the_doc_states_is_the_real_one() {
    let mut checked = 0;
    for row in doc_rows() {
        for (value, qualifier) in literal_defaults(&row.default) {
            let base = minimal_file(&row.key, qualifier.as_deref());
            let field = row.key.rsplit('.').next().unwrap_or(&row.key);
            let set = format!("{base}{field} = {}\n", toml_value(&row.kind, &value));
            assert!(
                parsed(&base) == parsed(&set),
                "docs/configuration.md says {} defaults to `{value}`{}, but setting it changes the configuration",
                row.key,
                qualifier.map(|q| format!(" ({q})")).unwrap_or_default()
            );
            checked += 1;
        }
    }
    assert!(checked > 40, "only {checked} defaults checked");
}

#[test]
fn a_wrong_default_in_the_doc_would_be_caught() {
    // The check above compares configurations; make sure a difference shows.
    let base = minimal_file("store.sweep_batch", None);
    assert_ne!(parsed(&base), parsed(&format!("{base}sweep_batch = 255\n")));
    assert_eq!(
        literal_defaults("`30m` (nonstop), `600s` (dsml)"),
        vec![
            ("30m".to_string(), Some("nonstop".to_string())),
            ("600s".to_string(), Some("dsml".to_string()))
        ]
    );
    assert!(literal_defaults("required").is_empty());
}
