//! A real headless browser for the web console's test: Chromium (the Debian package, installed by
//! `scripts/test.sh`), run once per page as a child process, bounded in time. `dump_dom` gives
//! the page as the browser parsed it (what a person would see, as HTML); `screenshot` a PNG.
//! HTTP Basic credentials ride in the URL (`http://user:password@127.0.0.1:port/…`), which
//! Chromium still honours for a top-level page.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

/// The longest one page may take.
const PAGE_TIMEOUT: Duration = Duration::from_secs(60);

/// The Chromium executable: `chromium`, else `chromium-browser`, on the PATH.
pub fn chromium() -> PathBuf {
    for name in ["chromium", "chromium-browser"] {
        if let Some(path) = std::env::var_os("PATH").and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|dir| dir.join(name))
                .find(|p| p.is_file())
        }) {
            return path;
        }
    }
    panic!("no chromium on the PATH: scripts/test.sh installs the Debian package `chromium`")
}

/// Run Chromium headless on `url` with `args`; its standard output.
fn run(url: &str, args: &[&str]) -> String {
    let profile = tempfile::tempdir().expect("a profile directory");
    let out = tempfile::NamedTempFile::new().expect("an output file");
    let mut child = crate::broker::command(chromium())
        .args([
            "--headless",
            // Root in a container has no user namespace for the sandbox.
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--hide-scrollbars",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(args)
        .arg(url)
        .stdin(Stdio::null())
        .stdout(out.reopen().expect("the output file"))
        .stderr(Stdio::null())
        .spawn()
        .expect("starting chromium");
    let status = crate::wait::poll(PAGE_TIMEOUT, || child.try_wait().expect("waiting"))
        .unwrap_or_else(|| {
            let _ = child.kill();
            let _ = child.wait();
            panic!("chromium did not finish {url} within {PAGE_TIMEOUT:?}")
        });
    assert!(status.success(), "chromium failed on {url}: {status}");
    std::fs::read_to_string(out.path()).unwrap_or_default()
}

/// The page at `url` as the browser's DOM, serialised.
pub fn dump_dom(url: &str) -> String {
    run(url, &["--dump-dom"])
}

/// A PNG of the page at `url`, `width`×`height` pixels, written to `path`.
pub fn screenshot(url: &str, path: &Path, width: u32, height: u32) {
    run(
        url,
        &[
            &format!("--screenshot={}", path.display()),
            &format!("--window-size={width},{height}"),
        ],
    );
    let png =
        std::fs::read(path).unwrap_or_else(|e| panic!("no screenshot at {}: {e}", path.display()));
    assert!(
        png.starts_with(b"\x89PNG\r\n\x1a\n") && png.len() > 5_000,
        "{} is not a screenshot of a page ({} bytes)",
        path.display(),
        png.len()
    );
}
