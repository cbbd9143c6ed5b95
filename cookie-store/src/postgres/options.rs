//! The `postgres://…` URL: our own settings in its query string, the rest for tokio-postgres.
//!
//! tokio-postgres refuses query parameters it does not know, so the store's settings are taken out of
//! the query string before the URL is handed over. Everything else (`user`, `password`, `host`,
//! `port`, `dbname`, `connect_timeout`, `application_name`, `sslmode`, …) keeps its libpq meaning.
//!
//! | parameter | default | what it sets |
//! | --- | --- | --- |
//! | `pool_size` | 8 | connections for durable writes (`synchronous_commit = on`). Each waits for its own commit's WAL flush before it runs its next statement, so concurrent durable writes share flushes only across connections: this is the group-commit width. |
//! | `lazy_pool_size` | 4 | connections for everything else (`synchronous_commit = off`): turns, lazy writes, reads. tokio-postgres pipelines concurrent statements on each. |
//! | `turn_poll_ms` | 20 | longest pause between two tries of a turn held by another process (tries start at 1 ms and double) |
//! | `sweep_claim_ms` | 60000 | how long rows handed to one sweeper by [`crate::SessionStore::due_for_expiry`] stay hidden from the others |
//! | `runtime_threads` | 2 | worker threads of the store's own tokio runtime |
//! | `reconnect_max_ms` | 2000 | longest pause between two tries to re-open a broken connection (from 50 ms, doubling) |
//!
//! Nothing here ever puts the password in a message: [`redact`] replaces it before a URL is shown.

use crate::StoreError;
use std::str::FromStr;
use std::time::Duration;

/// The store's own settings, from the URL's query string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgOptions {
    pub pool_size: usize,
    pub lazy_pool_size: usize,
    pub turn_poll_max: Duration,
    pub sweep_claim: Duration,
    pub runtime_threads: usize,
    pub reconnect_max: Duration,
}

impl Default for PgOptions {
    fn default() -> Self {
        Self {
            pool_size: 8,
            lazy_pool_size: 4,
            turn_poll_max: Duration::from_millis(20),
            sweep_claim: Duration::from_secs(60),
            runtime_threads: 2,
            reconnect_max: Duration::from_secs(2),
        }
    }
}

/// A parsed store URL.
pub(super) struct Parsed {
    /// What tokio-postgres connects with.
    pub config: tokio_postgres::Config,
    pub options: PgOptions,
    /// `user@host:port/dbname`, for messages (never the password).
    pub target: String,
}

/// Upper bounds that keep a typo from opening a thousand connections or threads.
const MAX_POOL: usize = 256;
const MAX_THREADS: usize = 64;

/// Split `url` into the store's settings and the connection settings.
pub(super) fn parse(url: &str) -> Result<Parsed, StoreError> {
    let shown = redact(url);
    let bad = |what: String| StoreError::Config(format!("store URL {shown}: {what}"));
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, query),
        None => (url, ""),
    };
    let mut options = PgOptions::default();
    let mut passed = Vec::new();
    // Split here, decoded by form_urlencoded: what is not the store's is passed on exactly as
    // written, because tokio-postgres decodes it again (percent-decoding only, `+` stays `+`), and
    // re-encoding a decoded value would not give back what the user wrote.
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let Some((key, value)) = url::form_urlencoded::parse(pair.as_bytes()).next() else {
            continue;
        };
        let number = || {
            value
                .parse::<u64>()
                .map_err(|_| bad(format!("{key}={value} is not a whole number")))
        };
        let count = |max: usize| {
            number().and_then(|n| {
                usize::try_from(n)
                    .ok()
                    .filter(|n| (1..=max).contains(n))
                    .ok_or_else(|| bad(format!("{key} must be between 1 and {max}")))
            })
        };
        let millis = || {
            number().and_then(|n| {
                (n > 0)
                    .then(|| Duration::from_millis(n))
                    .ok_or_else(|| bad(format!("{key} must be at least 1")))
            })
        };
        match key.as_ref() {
            "pool_size" => options.pool_size = count(MAX_POOL)?,
            "lazy_pool_size" => options.lazy_pool_size = count(MAX_POOL)?,
            "turn_poll_ms" => options.turn_poll_max = millis()?,
            "sweep_claim_ms" => options.sweep_claim = millis()?,
            "runtime_threads" => options.runtime_threads = count(MAX_THREADS)?,
            "reconnect_max_ms" => options.reconnect_max = millis()?,
            _ => passed.push(pair),
        }
    }
    let rest = if passed.is_empty() {
        base.to_owned()
    } else {
        format!("{base}?{}", passed.join("&"))
    };
    let config = tokio_postgres::Config::from_str(&rest).map_err(|e| bad(e.to_string()))?;
    if config.get_hosts().is_empty() {
        return Err(bad(
            "no host (as in postgres://user@db.example:5432/sessions)".into(),
        ));
    }
    let target = target(&config);
    Ok(Parsed {
        config,
        options,
        target,
    })
}

/// `user@host:port/dbname` of a connection config, for messages.
fn target(config: &tokio_postgres::Config) -> String {
    use tokio_postgres::config::Host;
    let ports = config.get_ports();
    let hosts: Vec<String> = config
        .get_hosts()
        .iter()
        .enumerate()
        .map(|(i, host)| {
            let port = ports.get(i).or(ports.first()).copied().unwrap_or(5432);
            match host {
                Host::Tcp(name) => format!("{name}:{port}"),
                Host::Unix(path) => format!("{}:{port}", path.display()),
            }
        })
        .collect();
    format!(
        "{}@{}/{}",
        config.get_user().unwrap_or("(no user)"),
        hosts.join(","),
        config
            .get_dbname()
            .or(config.get_user())
            .unwrap_or("(default)")
    )
}

/// `url` with its password (in the user info or a `password=` parameter) replaced by `***`.
pub(crate) fn redact(url: &str) -> String {
    let (scheme, rest) = match url.split_once("://") {
        Some(split) => split,
        None => return url.to_owned(),
    };
    // The user info ends at the last '@' before the path or query starts.
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let mut out = format!("{scheme}://");
    let after = match rest[..authority_end].rfind('@') {
        Some(at) => {
            let userinfo = &rest[..at];
            match userinfo.split_once(':') {
                Some((user, _)) => out.push_str(&format!("{user}:***@")),
                None => out.push_str(&format!("{userinfo}@")),
            }
            &rest[at + 1..]
        }
        None => rest,
    };
    match after.split_once('?') {
        None => out.push_str(after),
        Some((path, query)) => {
            out.push_str(path);
            out.push('?');
            let pairs: Vec<String> = query
                .split('&')
                .map(|pair| {
                    // Decoded as tokio-postgres will: `pass%77ord` is the password too.
                    let key = url::form_urlencoded::parse(pair.as_bytes()).next();
                    match key {
                        Some((key, _)) if key == "password" => "password=***".to_owned(),
                        _ => pair.to_owned(),
                    }
                })
                .collect();
            out.push_str(&pairs.join("&"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_settings_are_taken_out_and_the_rest_passed_on() {
        let p = parse(
            "postgres://app:s3cret@db.example:6432/sessions?pool_size=3&application_name=b1&turn_poll_ms=5",
        )
        .unwrap();
        assert_eq!(p.options.pool_size, 3);
        assert_eq!(p.options.turn_poll_max, Duration::from_millis(5));
        assert_eq!(p.options.lazy_pool_size, 4);
        assert_eq!(p.config.get_application_name(), Some("b1"));
        assert_eq!(p.config.get_dbname(), Some("sessions"));
        assert_eq!(p.target, "app@db.example:6432/sessions");
    }

    #[test]
    fn bad_settings_are_config_errors_that_never_show_the_password() {
        for url in [
            "postgres://app:s3cret@db/x?pool_size=0",
            "postgres://app:s3cret@db/x?pool_size=many",
            "postgres://app:s3cret@db/x?turn_poll_ms=0",
            "postgres://app:s3cret@db/x?no_such_option=1",
            "postgres://app:s3cret@db:notaport/x",
            "postgres://app@db/x?password=s3cret&bogus=1",
        ] {
            let err = parse(url).err().expect(url);
            let text = err.to_string();
            assert!(matches!(err, StoreError::Config(_)), "{url}: {text}");
            assert!(!text.contains("s3cret"), "{url}: {text}");
        }
    }

    #[test]
    fn percent_encoded_values_are_decoded() {
        let p =
            parse("postgres://app@db.example/sessions?pool_size=%33&password=p%40ss%2Bw%26rd+x")
                .unwrap();
        assert_eq!(p.options.pool_size, 3);
        // Passed on as written and decoded by tokio-postgres: `%40` is `@`, `%2B` and `+` are `+`.
        assert_eq!(p.config.get_password(), Some(&b"p@ss+w&rd+x"[..]));
        let shown = redact("postgres://db/x?user=a&pass%77ord=p%40ss");
        assert_eq!(shown, "postgres://db/x?user=a&password=***");
    }

    #[test]
    fn redact_hides_passwords_only() {
        assert_eq!(
            redact("postgres://app:p@ss:w@db:5432/x?sslmode=disable"),
            "postgres://app:***@db:5432/x?sslmode=disable"
        );
        assert_eq!(redact("postgres://app@db/x"), "postgres://app@db/x");
        assert_eq!(
            redact("postgresql://db/x?user=a&password=b"),
            "postgresql://db/x?user=a&password=***"
        );
    }
}
