//! `soapbench ldap`: a one-entry base search inside a DSML session, through the broker to an LDAP
//! directory, against the same search sent straight to the directory by a plain client (ldap3,
//! one connection per virtual client, bound as the same account): the floor. Side by side in one
//! run ([`super::floor`]).
//!
//! Each broker client begins one DSML session (its first batch pins a connection), then sends a
//! `batchRequest` holding one `searchRequest` (baseObject on `uid=ann,ou=people,…`, two attributes)
//! in a closed loop. The directory is `--ldap URL` (default `$BROKER_TEST_LDAP`), with the tree of
//! `scripts/slapd.sh` (`eval "$(bash scripts/slapd.sh start)"`).

use super::floor::{self, Figures, LoopArgs, SoapConnection};

#[derive(clap::Args, Debug, Clone)]
pub struct LdapArgs {
    /// The directory, e.g. ldap://127.0.0.1:389, with scripts/slapd.sh's tree. Default:
    /// $BROKER_TEST_LDAP.
    #[arg(long)]
    pub ldap: Option<String>,
    /// The DN both targets bind as.
    #[arg(long, default_value = "cn=admin,dc=example,dc=com")]
    pub bind_dn: String,
    #[arg(long, default_value = "secret")]
    pub bind_password: String,
    #[command(flatten)]
    pub loops: LoopArgs,
}

const ENTRY: &str = "uid=ann,ou=people,dc=example,dc=com";
const AD_NS: &str = "urn:schema-microsoft-com:activedirectory:dsmlv2";
const DSML_NS: &str = "urn:oasis:names:tc:DSML:2:0:core";
const FLOOR: &str = "ldap-direct";

pub fn run(args: LdapArgs) -> Result<(), String> {
    let url = args
        .ldap
        .clone()
        .or_else(|| std::env::var("BROKER_TEST_LDAP").ok())
        .ok_or("soapbench ldap needs --ldap URL (or BROKER_TEST_LDAP; scripts/slapd.sh start)")?;
    let loops = &args.loops;
    let bin_dir = floor::bin_dir(loops)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let dir = tempfile::Builder::new()
        .prefix("soapbench-ldap-")
        .tempdir()
        .map_err(|e| e.to_string())?;
    let data = dir.path().join("data").display().to_string();
    let (addr, broker) = floor::start_broker("broker-ldap", dir.path(), &bin_dir, |addr| {
        format!(
            r#"[broker]
listen = "{addr}"
data_dir = {data:?}
workers = {workers}

[log]
level = "warn"

[[endpoint]]
path = "/dsml"
dialect = "dsml"
session_timeout = "10m"
sessions_max = 0
sessions_max_per_ip = 0

[[server_class]]
name = "directory"
adapter = "ldap"
directory = {url:?}
bind_dn = {dn:?}
bind_password = {pw:?}
context = "sensitive"
min_workers = 1
max_workers = {max}
request_timeout = "30s"

[[service]]
name = "batchRequest"
endpoint = "/dsml"
server_class = "directory"
"#,
            workers = loops.broker_workers,
            dn = args.bind_dn,
            pw = args.bind_password,
            max = loops.connections + 2,
        )
    })?;

    println!(
        "ldap: base search of one entry, {} virtual clients, {} rounds of {:?} (+{:?} warm-up)",
        loops.connections, loops.rounds, loops.duration, loops.warmup
    );
    let outcome = floor::rounds(loops, FLOOR, |target| {
        rt.block_on(async {
            match target {
                FLOOR => direct(&url, &args).await,
                _ => through_broker(&addr, loops).await,
            }
        })
    });
    drop(broker);
    outcome.map_err(|e| {
        // Keep the broker's log for the post-mortem.
        let kept = dir.keep();
        format!("{e}\n(broker log kept under {})", kept.display())
    })
}

async fn direct(url: &str, args: &LdapArgs) -> Result<Figures, String> {
    floor::closed_loop(&args.loops, |i| {
        let (url, dn, pw) = (
            url.to_string(),
            args.bind_dn.clone(),
            args.bind_password.clone(),
        );
        let loops = args.loops.clone();
        async move {
            let (conn, mut ldap) = ldap3::LdapConnAsync::new(&url)
                .await
                .map_err(|e| format!("{url}: {e}"))?;
            tokio::task::spawn_local(async move {
                let _ = conn.drive().await;
            });
            ldap.simple_bind(&dn, &pw)
                .await
                .and_then(|r| r.success())
                .map_err(|e| format!("bind: {e}"))?;
            let result = floor::measure(&loops, i, 1, |_| {
                let mut ldap = ldap.clone();
                async move {
                    matches!(
                        ldap.search(ENTRY, ldap3::Scope::Base, "(objectClass=*)", vec!["cn", "mail"]).await,
                        Ok(ldap3::SearchResult(entries, r)) if r.rc == 0 && entries.len() == 1
                    )
                }
            })
            .await;
            let _ = ldap.unbind().await;
            Ok(result)
        }
    })
    .await
}

fn search_batch() -> String {
    format!(
        "<batchRequest xmlns=\"{DSML_NS}\"><searchRequest requestID=\"1\" dn=\"{ENTRY}\" scope=\"baseObject\" derefAliases=\"neverDerefAliases\"><filter><present name=\"objectClass\"/></filter><attributes><attribute name=\"cn\"/><attribute name=\"mail\"/></attributes></searchRequest></batchRequest>"
    )
}

async fn through_broker(addr: &str, loops: &LoopArgs) -> Result<Figures, String> {
    floor::closed_loop(loops, |i| {
        let (addr, loops) = (addr.to_string(), loops.clone());
        async move {
            let mut conn = SoapConnection::open(&addr, "/dsml", "\"#batchRequest\"", None).await?;
            let begin = format!("<ad:BeginSession xmlns:ad=\"{AD_NS}\"/>");
            let (ok, body) = conn.post(&begin, &search_batch()).await?;
            let id = floor::attribute_of(ok, &body, "SessionID")?;
            let header = format!("<ad:Session xmlns:ad=\"{AD_NS}\" ad:SessionID=\"{id}\"/>");
            let result = floor::measure(&loops, i, 1, |_| {
                let reply = conn.post(&header, &search_batch());
                async move {
                    matches!(reply.await, Ok((true, body)) if body.windows(14).any(|w| w == b"code=\"0\" descr"))
                }
            })
            .await;
            let end = format!("<ad:EndSession xmlns:ad=\"{AD_NS}\" ad:SessionID=\"{id}\"/>");
            let _ = conn
                .post(&end, &format!("<batchRequest xmlns=\"{DSML_NS}\"/>"))
                .await;
            Ok(result)
        }
    })
    .await
}
