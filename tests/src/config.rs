//! Test configurations: one `/soap` NonStop endpoint and the sample `echo` class, light enough to
//! run several brokers side by side on two cores (one HTTP worker thread, one echo worker up front).

/// A broker configuration for tests. [`TestConfig::render`] gives the TOML.
#[derive(Debug, Clone)]
pub struct TestConfig {
    /// `[broker] id` (default `test`).
    pub broker_id: String,
    /// `[store] url` (default the broker's own sled, `sled:{data_dir}/cookies`).
    pub store_url: String,
    /// More TOML lines for `[store]` (`turn_lease = "4s"`…).
    pub store_extra: String,
    /// TOML lines for `[cluster]` (`secret = "…"`, `heartbeat = "200ms"`…).
    pub cluster: String,
    pub session_timeout: String,
    /// `roles` of the `/soap` endpoint.
    pub roles: Vec<String>,
    pub turn_wait: Option<String>,
    pub sweep_interval: String,
    pub log_level: String,
    /// `[log] format` (`human` unless set).
    pub log_format: String,
    /// `[log] request_spans`.
    pub request_spans: bool,
    /// More TOML lines for `[log]` (`otlp_endpoint = "…"`).
    pub log_extra: String,
    /// The echo class's `adapter` and adapter settings, as TOML lines (default: the process adapter
    /// running `{broker_exe} sample-server echo`).
    pub echo_adapter: String,
    pub echo_min_workers: usize,
    pub echo_max_workers: usize,
    pub echo_request_timeout: String,
    /// More TOML lines for the echo class (`queue_limit = 2`…).
    pub echo_extra: String,
    /// Appended at the end: more `[[server_class]]` / `[[service]]` tables.
    pub extra: String,
    /// More TOML lines for the `/soap` endpoint (`transaction_timeout = "1s"`…).
    pub soap_endpoint_extra: String,
}

/// The process adapter running the broker's own sample echo server.
pub const SAMPLE_ECHO_PROCESS: &str =
    "adapter = \"process\"\ncommand = [\"{broker_exe}\", \"sample-server\", \"echo\"]";

impl Default for TestConfig {
    fn default() -> Self {
        TestConfig {
            broker_id: "test".into(),
            store_url: "sled:{data_dir}/cookies".into(),
            store_extra: String::new(),
            cluster: String::new(),
            session_timeout: "30m".into(),
            roles: Vec::new(),
            turn_wait: None,
            sweep_interval: "1s".into(),
            log_level: "info".into(),
            log_format: "human".into(),
            request_spans: true,
            log_extra: String::new(),
            echo_adapter: SAMPLE_ECHO_PROCESS.into(),
            echo_min_workers: 1,
            echo_max_workers: 2,
            echo_request_timeout: "30s".into(),
            echo_extra: String::new(),
            extra: String::new(),
            soap_endpoint_extra: String::new(),
        }
    }
}

impl TestConfig {
    pub fn new() -> TestConfig {
        TestConfig::default()
    }

    pub fn broker_id(mut self, id: &str) -> TestConfig {
        self.broker_id = id.into();
        self
    }

    pub fn store_url(mut self, url: &str) -> TestConfig {
        self.store_url = url.into();
        self
    }

    pub fn store_extra(mut self, toml_lines: &str) -> TestConfig {
        self.store_extra = toml_lines.into();
        self
    }

    pub fn cluster(mut self, toml_lines: &str) -> TestConfig {
        self.cluster = toml_lines.into();
        self
    }

    pub fn session_timeout(mut self, t: &str) -> TestConfig {
        self.session_timeout = t.into();
        self
    }

    pub fn roles(mut self, roles: &[&str]) -> TestConfig {
        self.roles = roles.iter().map(|s| s.to_string()).collect();
        self
    }

    /// Logs as JSON lines at `level`.
    pub fn json_logs(mut self, level: &str) -> TestConfig {
        self.log_level = level.into();
        self.log_format = "json".into();
        self
    }

    pub fn log_extra(mut self, toml_lines: &str) -> TestConfig {
        self.log_extra = toml_lines.into();
        self
    }

    pub fn sweep_interval(mut self, t: &str) -> TestConfig {
        self.sweep_interval = t.into();
        self
    }

    pub fn echo_adapter(mut self, toml_lines: &str) -> TestConfig {
        self.echo_adapter = toml_lines.into();
        self
    }

    pub fn echo_workers(mut self, min: usize, max: usize) -> TestConfig {
        self.echo_min_workers = min;
        self.echo_max_workers = max;
        self
    }

    pub fn echo_request_timeout(mut self, t: &str) -> TestConfig {
        self.echo_request_timeout = t.into();
        self
    }

    pub fn echo_extra(mut self, toml_lines: &str) -> TestConfig {
        self.echo_extra = toml_lines.into();
        self
    }

    pub fn extra(mut self, toml: &str) -> TestConfig {
        self.extra = toml.into();
        self
    }

    pub fn soap_endpoint_extra(mut self, toml_lines: &str) -> TestConfig {
        self.soap_endpoint_extra = toml_lines.into();
        self
    }

    /// The TOML text.
    pub fn render(&self) -> String {
        let roles = self
            .roles
            .iter()
            .map(|r| format!("{r:?}"))
            .collect::<Vec<_>>()
            .join(", ");
        let turn_wait = self
            .turn_wait
            .as_ref()
            .map(|t| format!("turn_wait = {t:?}\n"))
            .unwrap_or_default();
        format!(
            r#"# Written by the broker-tests harness.
[broker]
id = {broker_id:?}
workers = 1
shutdown_timeout = "5s"

[log]
level = {log_level:?}
format = {log_format:?}
request_spans = {request_spans}
{log_extra}

[store]
url = {store_url:?}
sweep_interval = {sweep:?}
sweep_batch = 256
{store_extra}

[cluster]
{cluster}

[[endpoint]]
path = "/soap"
dialect = "nonstop"
session_timeout = {session_timeout:?}
roles = [{roles}]
{turn_wait}{soap_endpoint_extra}
[[server_class]]
name = "echo"
{adapter}
context = "free"
min_workers = {min}
max_workers = {max}
request_timeout = {rt:?}
{echo_extra}

[[service]]
name = "Echo"
endpoint = "/soap"
server_class = "echo"

{extra}
"#,
            broker_id = self.broker_id,
            store_url = self.store_url,
            store_extra = self.store_extra,
            cluster = self.cluster,
            log_level = self.log_level,
            log_format = self.log_format,
            request_spans = self.request_spans,
            log_extra = self.log_extra,
            sweep = self.sweep_interval,
            session_timeout = self.session_timeout,
            adapter = self.echo_adapter,
            min = self.echo_min_workers,
            max = self.echo_max_workers,
            rt = self.echo_request_timeout,
            echo_extra = self.echo_extra,
            extra = self.extra,
            soap_endpoint_extra = self.soap_endpoint_extra,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_valid_toml_with_placeholders_intact() {
        let text = TestConfig::new()
            .roles(&["http://example.org/ts-tests/C"])
            .render();
        let v: toml::Table = toml::from_str(&text).expect("valid TOML");
        assert_eq!(v["store"]["url"].as_str(), Some("sled:{data_dir}/cookies"));
        assert_eq!(
            v["endpoint"][0]["roles"][0].as_str(),
            Some("http://example.org/ts-tests/C")
        );
        assert_eq!(
            v["server_class"][0]["command"][0].as_str(),
            Some("{broker_exe}")
        );
    }
}
