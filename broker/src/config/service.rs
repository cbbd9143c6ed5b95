//! `[[service]]`: which class serves a service on an endpoint, and for a class that speaks
//! records, the service's `[service.record]`: its layouts (a copybook or a field list), the request
//! record, and the reply layouts with their `ResponseSelection` rules. A record service's layouts are
//! read and checked here, once, into the [`RecordService`] the router hands the engine.

use super::{ConfigError, Ctx, DialectKind, EndpointConfig, Placeholders, ServiceConfig};
use crate::record_service::{RecordService, ReplyLayout};
use adapters::{PayloadFormat, ServerClassConfig};
use records::select::{Comparison, Conversion, Rule};
use records::{Charset, Encoding, Layout, Termination};
use serde::Deserialize;
use std::path::Path;
use std::sync::Arc;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ServiceSection {
    pub name: String,
    pub endpoint: String,
    pub server_class: String,
    /// Default: the service's name.
    #[serde(default)]
    pub operation: Option<String>,
    #[serde(default)]
    pub response_encoding: Option<String>,
    #[serde(default)]
    pub abort_transaction_on_fault: bool,
    #[serde(default)]
    pub record: Option<RecordSection>,
}

/// `[[service]]`: each names an endpoint and a class that exist, once per endpoint.
pub(super) fn services(
    cx: &Ctx<'_>,
    raw: Vec<ServiceSection>,
    endpoints: &[EndpointConfig],
    classes: &[ServerClassConfig],
    placeholders: &Placeholders,
) -> Result<Vec<ServiceConfig>, ConfigError> {
    let mut services: Vec<ServiceConfig> = Vec::new();
    for (i, s) in raw.into_iter().enumerate() {
        let k = |f: &str| format!("service[{i}].{f}");
        for (key, value) in [
            ("name", &s.name),
            ("endpoint", &s.endpoint),
            ("server_class", &s.server_class),
        ] {
            if value.trim().is_empty() {
                return Err(cx.err(k(key), "must not be empty"));
            }
        }
        if !endpoints.iter().any(|e| e.path == s.endpoint) {
            return Err(cx.err(
                k("endpoint"),
                format!("{:?} is not a configured endpoint path", s.endpoint),
            ));
        }
        if !classes.iter().any(|c| c.name == s.server_class) {
            return Err(cx.err(
                k("server_class"),
                format!("{:?} is not a configured server_class name", s.server_class),
            ));
        }
        if services
            .iter()
            .any(|o| o.name == s.name && o.endpoint == s.endpoint)
        {
            return Err(cx.err(
                k("name"),
                format!(
                    "{:?} is configured twice for endpoint {:?}",
                    s.name, s.endpoint
                ),
            ));
        }
        // A class that binds as the client needs the client's password, which only an endpoint
        // with auth = "directory" takes (and such an endpoint checks nothing itself).
        let directory_auth = endpoints
            .iter()
            .any(|e| e.path == s.endpoint && e.auth == crate::auth::AuthMode::Directory);
        let binds_as_client = classes
            .iter()
            .any(|c| c.name == s.server_class && c.binds_as_client());
        if directory_auth != binds_as_client {
            return Err(cx.err(
                k("server_class"),
                if directory_auth {
                    format!("endpoint {:?} has auth = \"directory\": its classes must check the credentials (an ldap class with bind = \"principal\"), and {:?} does not", s.endpoint, s.server_class)
                } else {
                    format!("{:?} binds as the client (bind = \"principal\"): its endpoint {:?} needs auth = \"directory\" to take the client's password", s.server_class, s.endpoint)
                },
            ));
        }
        if let Some(enc) = &s.response_encoding {
            if crate::dialect::OutputEncoding::for_label(enc).is_none() {
                return Err(cx.err(
                    k("response_encoding"),
                    format!("{enc:?} is not an encoding replies can be written in (an encoding label such as UTF-8, ISO-8859-1 or Shift_JIS; not UTF-16)"),
                ));
            }
        }
        let endpoint = endpoints.iter().find(|e| e.path == s.endpoint);
        let class = classes.iter().find(|c| c.name == s.server_class);
        let record = match (endpoint, class) {
            (Some(endpoint), Some(class)) => record_service(
                cx,
                &k("record"),
                &s.name,
                s.record,
                endpoint,
                class,
                placeholders,
            )?,
            _ => None,
        };
        services.push(ServiceConfig {
            record,
            operation: s.operation.unwrap_or_else(|| s.name.clone()),
            name: s.name,
            endpoint: s.endpoint,
            server_class: s.server_class,
            response_encoding: s.response_encoding,
            abort_transaction_on_fault: s.abort_transaction_on_fault,
        });
    }
    Ok(services)
}

// ---- [service.record] ---------------------------------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RecordSection {
    /// The layouts as text (a copybook, or a field list with `syntax = "fields"`).
    #[serde(default)]
    pub layouts: Option<String>,
    /// Or a file holding them, relative to the configuration file's directory.
    #[serde(default)]
    pub layouts_file: Option<String>,
    /// Default: `fields` for a `.toml` file, else `copybook`.
    #[serde(default)]
    pub syntax: Option<SyntaxName>,
    pub request: String,
    #[serde(default = "default_record_encoding")]
    pub encoding: String,
    #[serde(default)]
    pub termination: TerminationName,
    #[serde(default)]
    pub reply: Vec<ReplySection>,
}

fn default_record_encoding() -> String {
    "US-ASCII".into()
}

#[derive(Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub(super) enum SyntaxName {
    Copybook,
    Fields,
}

#[derive(Deserialize, Default, Clone, Copy)]
#[serde(rename_all = "kebab-case")]
pub(super) enum TerminationName {
    #[default]
    SpacePadded,
    NullTerminated,
}

#[derive(Deserialize, Default, Clone, Copy)]
#[serde(rename_all = "lowercase")]
pub(super) enum ComparisonName {
    #[default]
    Eq,
    Ne,
    Gt,
    Lt,
}

#[derive(Deserialize, Default, Clone, Copy)]
#[serde(rename_all = "lowercase")]
pub(super) enum ConversionName {
    #[default]
    String,
    Decimal,
}

/// `[[service.record.reply]]`: one reply layout and its `ResponseSelection`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ReplySection {
    pub layout: String,
    #[serde(default)]
    pub start: Option<usize>,
    #[serde(default)]
    pub end: Option<usize>,
    #[serde(default)]
    pub value: Option<String>,
    #[serde(default)]
    pub comparison: ComparisonName,
    #[serde(default)]
    pub conversion: ConversionName,
    #[serde(default)]
    pub default: bool,
    #[serde(default)]
    pub fault: bool,
    #[serde(default)]
    pub fault_string: Option<String>,
}

/// Check a service's `record` table against its class and build what the engine uses.
fn record_service(
    cx: &Ctx<'_>,
    key: &str,
    service: &str,
    raw: Option<RecordSection>,
    endpoint: &EndpointConfig,
    class: &ServerClassConfig,
    placeholders: &Placeholders,
) -> Result<Option<Arc<RecordService>>, ConfigError> {
    let k = |f: &str| format!("{key}.{f}");
    let raw = match (raw, class.payload) {
        (None, PayloadFormat::Xml) => return Ok(None),
        (None, PayloadFormat::Record) => {
            return Err(cx.err(
                key,
                format!("{:?} has payload = \"record\": its services need a [service.record] table (the request layout and the reply layouts)", class.name),
            ))
        }
        (Some(_), PayloadFormat::Xml) => {
            return Err(cx.err(
                key,
                format!("{:?} takes XML (payload = \"xml\"); set payload = \"record\" on the class for record services", class.name),
            ))
        }
        (Some(raw), PayloadFormat::Record) => raw,
    };
    if endpoint.dialect != DialectKind::NonStop {
        return Err(cx.err(
            key,
            format!(
                "record services are NonStop's; endpoint {:?} speaks {}",
                endpoint.path,
                endpoint.dialect.name()
            ),
        ));
    }
    let (text, syntax) = match (&raw.layouts, &raw.layouts_file) {
        (Some(_), Some(_)) => {
            return Err(cx.err(k("layouts_file"), "give layouts or layouts_file, not both"))
        }
        (None, None) => {
            return Err(cx.err(
                k("layouts"),
                "missing: the copybook (or field list) as text, or layouts_file naming it",
            ))
        }
        (Some(text), None) => (text.clone(), raw.syntax.unwrap_or(SyntaxName::Copybook)),
        (None, Some(file)) => {
            let path = relative_to_config(cx.file, &placeholders.expand(file));
            let text = std::fs::read_to_string(&path).map_err(|e| {
                cx.err(
                    k("layouts_file"),
                    format!("cannot read {}: {e}", path.display()),
                )
            })?;
            let by_name = if path.extension().is_some_and(|x| x == "toml") {
                SyntaxName::Fields
            } else {
                SyntaxName::Copybook
            };
            (text, raw.syntax.unwrap_or(by_name))
        }
    };
    let source = if raw.layouts.is_some() {
        "layouts"
    } else {
        "layouts_file"
    };
    let layouts: Vec<Layout> = match syntax {
        SyntaxName::Copybook => records::copybook::parse(&text)
            .map_err(|e| cx.err(k(source), format!("copybook {e}")))?,
        SyntaxName::Fields => records::fields::parse(&text).map_err(|e| cx.err(k(source), e))?,
    };
    let find = |name: &str, key: String| {
        layouts
            .iter()
            .find(|l| l.name.eq_ignore_ascii_case(name))
            .cloned()
            .ok_or_else(|| {
                let known: Vec<&str> = layouts.iter().map(|l| l.name.as_str()).collect();
                cx.err(
                    key,
                    format!("no layout {name:?} (the layouts are {})", known.join(", ")),
                )
            })
    };
    let request = find(&raw.request, k("request"))?;
    let charset = Charset::for_name(&raw.encoding).ok_or_else(|| {
        cx.err(
            k("encoding"),
            format!(
                "{:?} is not a record encoding (US-ASCII, ISO-8859-1, IBM-037, IBM-1140 or Shift_JIS)",
                raw.encoding
            ),
        )
    })?;
    if raw.reply.is_empty() {
        return Err(cx.err(
            k("reply"),
            "missing: at least one [[service.record.reply]] naming a reply layout",
        ));
    }
    let only_one = raw.reply.len() == 1;
    let mut replies = Vec::with_capacity(raw.reply.len());
    for (j, r) in raw.reply.into_iter().enumerate() {
        let rk = |f: &str| format!("{key}.reply[{j}].{f}");
        let layout = find(&r.layout, rk("layout"))?;
        let selection = match (r.start, r.end, r.value) {
            (Some(start), Some(end), Some(value)) => Some((start, end, value)),
            (None, None, None) => None,
            _ => {
                return Err(cx.err(
                    rk("start"),
                    "start, end and value go together: give all three (a selection) or none (the default layout)",
                ))
            }
        };
        // A lone layout needs no selection: it answers every reply.
        let default = r.default || (only_one && selection.is_none());
        let (start, end, value) = match selection {
            Some((start, end, _)) if start >= end => {
                return Err(cx.err(
                    rk("end"),
                    format!("{end} must be more than start ({start}); end is exclusive"),
                ))
            }
            Some(s) => s,
            None if default => (0, 0, String::new()),
            None => {
                return Err(cx.err(
                    rk("default"),
                    "a reply without a selection (start, end, value) must be the default one (default = true)",
                ))
            }
        };
        if r.fault_string.is_some() && !r.fault {
            return Err(cx.err(
                rk("fault_string"),
                "only applies to a layout with fault = true",
            ));
        }
        replies.push(ReplyLayout {
            rule: Rule {
                start,
                end,
                value,
                comparison: match r.comparison {
                    ComparisonName::Eq => Comparison::Eq,
                    ComparisonName::Ne => Comparison::Ne,
                    ComparisonName::Gt => Comparison::Gt,
                    ComparisonName::Lt => Comparison::Lt,
                },
                conversion: match r.conversion {
                    ConversionName::String => Conversion::String,
                    ConversionName::Decimal => Conversion::Decimal,
                },
                default,
                fault: r.fault,
                layout: layout.name.clone(),
            },
            fault_string: r
                .fault_string
                .unwrap_or_else(|| format!("Error from server class {}", class.name)),
            layout,
        });
    }
    if replies.iter().filter(|r| r.rule.default).count() > 1 {
        return Err(cx.err(k("reply"), "more than one reply layout is the default"));
    }
    Ok(Some(Arc::new(RecordService {
        service: service.to_string(),
        namespace: endpoint.namespace.clone(),
        request,
        replies,
        encoding: Encoding {
            charset,
            termination: match raw.termination {
                TerminationName::SpacePadded => Termination::SpacePadded,
                TerminationName::NullTerminated => Termination::NullTerminated,
            },
        },
    })))
}

/// `file` as written in the configuration: absolute, or relative to the configuration file's
/// directory (the working directory for the embedded default).
fn relative_to_config(config_file: &str, file: &str) -> std::path::PathBuf {
    let path = Path::new(file);
    if path.is_absolute() || config_file.starts_with('<') {
        return path.to_path_buf();
    }
    match Path::new(config_file).parent() {
        Some(dir) => dir.join(path),
        None => path.to_path_buf(),
    }
}
