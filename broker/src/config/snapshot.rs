//! Snapshots that pin what the configuration parses to, so that a refactoring of the parser
//! provably changes nothing a user sees: the embedded default and a file setting every key each
//! parse to the `Config` in `testdata/*.debug` (its `{:#?}`), and every bad file in
//! `testdata/error_cases.txt` gives the error line in `testdata/errors.expected`.
//!
//! A deliberate change updates the snapshots: `UPDATE_SNAPSHOTS=1 cargo test -p broker config`,
//! then review the diff of `testdata/` like code.

use super::*;

const TESTDATA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/src/config/testdata");

/// The `{:#?}` of a parsed configuration without what differs from run to run: the path of the
/// test binary (the `{broker_exe}` placeholder) is written back as the placeholder.
fn normalised(c: &Config) -> String {
    let text = format!("{c:#?}\n");
    match std::env::current_exe() {
        Ok(exe) => text.replace(&exe.display().to_string(), "{broker_exe}"),
        Err(_) => text,
    }
}

/// Compare `actual` with the snapshot file `name`, or rewrite it under `UPDATE_SNAPSHOTS`.
fn check(name: &str, actual: &str) {
    let path = format!("{TESTDATA}/{name}");
    if std::env::var_os("UPDATE_SNAPSHOTS").is_some() {
        std::fs::write(&path, actual).unwrap_or_else(|e| panic!("{path}: {e}"));
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    if expected != actual {
        let first = expected
            .lines()
            .zip(actual.lines())
            .position(|(a, b)| a != b)
            .unwrap_or(expected.lines().count().min(actual.lines().count()));
        panic!(
            "{name} differs from the snapshot from line {}:\n  expected: {:?}\n  actual:   {:?}\n(UPDATE_SNAPSHOTS=1 rewrites it)",
            first + 1,
            expected.lines().nth(first),
            actual.lines().nth(first)
        );
    }
}

/// The cluster secret may come from the environment, which would change the snapshots.
fn environment_is_clean() -> bool {
    std::env::var_os(CLUSTER_SECRET_ENV).is_none()
}

#[test]
fn the_embedded_default_parses_to_its_snapshot() {
    if !environment_is_clean() {
        return;
    }
    // The default ID is `<hostname>-<pid>`: fix it.
    let o = Overrides {
        id: Some("snapshot".into()),
        ..Overrides::default()
    };
    let c = Config::embedded(&o).expect("the embedded default is valid");
    check("embedded_default.debug", &normalised(&c));
}

#[test]
fn a_file_setting_every_key_parses_to_its_snapshot() {
    if !environment_is_clean() {
        return;
    }
    let text = std::fs::read_to_string(format!("{TESTDATA}/all_keys.toml")).expect("all_keys.toml");
    let c = Config::from_toml("all_keys.toml", &text, &Overrides::default())
        .expect("all_keys.toml is valid");
    check("all_keys.debug", &normalised(&c));
}

#[test]
fn every_bad_file_gives_its_snapshot_error() {
    if !environment_is_clean() {
        return;
    }
    let cases =
        std::fs::read_to_string(format!("{TESTDATA}/error_cases.txt")).expect("error_cases.txt");
    // Each case starts with a line `### name`; the comment lines before the first are skipped.
    let mut named: Vec<(&str, String)> = Vec::new();
    for line in cases.lines() {
        match (line.strip_prefix("### "), named.last_mut()) {
            (Some(name), _) => named.push((name, String::new())),
            (None, Some((_, text))) => {
                text.push_str(line);
                text.push('\n');
            }
            (None, None) => {}
        }
    }
    let mut out = String::new();
    for (name, text) in &named {
        let line = match Config::from_toml("bad.toml", text, &Overrides::default()) {
            Ok(_) => "(accepted)".to_string(),
            Err(e) => e.to_string(),
        };
        out.push_str(&format!("### {name}\n{line}\n"));
    }
    check("errors.expected", &out);
}
