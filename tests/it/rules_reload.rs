//! Rules change without a restart: a new file on disk takes effect, a broken one does
//! not replace the good one.

use crate::support;

use std::time::{Duration, Instant};

use storage_grants::proto::GrantReadRequest;
use support::{Service, Setup, TOKEN, authed, demo_store, metric, metrics_when};
use tonic::Code;

fn read(key: &str) -> GrantReadRequest {
    GrantReadRequest {
        bucket: "demo".into(),
        key: key.into(),
        ..Default::default()
    }
}

/// Polls GrantRead for `key` until it answers `want`, for at most 10 seconds.
async fn wait_for(service: &Service, key: &str, want: Code) {
    let mut client = service.client().await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let got = match client.grant_read(authed(read(key), &TOKEN)).await {
            Ok(_) => Code::Ok,
            Err(status) => status.code(),
        };
        if got == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{key}: still {got:?}, wanted {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

const PRIVATE_TOO: &str = r#"
[[rules]]
callers = ["dev:demo"]
bucket = "demo"
prefix = "public/"
actions = ["read"]

[[rules]]
callers = ["dev:demo"]
bucket = "demo"
prefix = "private/"
actions = ["read"]
"#;

#[tokio::test]
async fn changed_rules_file_takes_effect_without_restart() {
    let store = demo_store().await;
    let service = Service::start(&store, Setup::new()).await;
    wait_for(&service, "private/secret.txt", Code::PermissionDenied).await;
    std::fs::write(service.rules_path(), PRIVATE_TOO).unwrap();
    wait_for(&service, "private/secret.txt", Code::Ok).await;
    // And back: removing the rule takes the access away again.
    std::fs::write(service.rules_path(), Setup::new().rules).unwrap();
    wait_for(&service, "private/secret.txt", Code::PermissionDenied).await;
}

#[tokio::test]
async fn broken_rules_file_keeps_the_good_rules() {
    let store = demo_store().await;
    let service = Service::start(&store, Setup::new()).await;
    std::fs::write(service.rules_path(), PRIVATE_TOO).unwrap();
    wait_for(&service, "private/secret.txt", Code::Ok).await;

    // A rule with a prefix that would widen grants, and plain garbage: both refused.
    let widening = PRIVATE_TOO.replace("prefix = \"private/\"", "prefix = \"*\"");
    for broken in [widening.as_str(), "[[rules]\nthis is not toml"] {
        std::fs::write(service.rules_path(), broken).unwrap();
        // Give the watcher several polls to (not) pick it up.
        tokio::time::sleep(Duration::from_millis(800)).await;
        wait_for(&service, "private/secret.txt", Code::Ok).await;
        wait_for(&service, "public/hello.txt", Code::Ok).await;
    }
}

#[cfg(unix)]
#[tokio::test]
async fn sighup_reloads_the_rules() {
    let store = demo_store().await;
    let mut setup = Setup::new();
    // Polling would not notice within the test: only SIGHUP can reload.
    setup.rules_reload_interval = "1h";
    let service = Service::start(&store, setup).await;
    wait_for(&service, "private/secret.txt", Code::PermissionDenied).await;
    std::fs::write(service.rules_path(), PRIVATE_TOO).unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    wait_for(&service, "private/secret.txt", Code::PermissionDenied).await;
    let status = std::process::Command::new("kill")
        .args(["-HUP", &std::process::id().to_string()])
        .status()
        .expect("kill -HUP");
    assert!(status.success());
    wait_for(&service, "private/secret.txt", Code::Ok).await;
}

#[tokio::test]
async fn removed_rules_file_keeps_the_last_good_rules_and_says_so() {
    // A file deleted or made unreadable (a bad ConfigMap rollout, a failed mount) is
    // not an order to revoke everything: the last good rules stay, every poll tries
    // again and is refused (and logged), and a gauge says the rules are stale.
    let store = demo_store().await;
    let service = Service::start(
        &store,
        Setup::with_config("[metrics]\nlisten = \"127.0.0.1:0\"\n"),
    )
    .await;
    let port = service.metrics_port();
    std::fs::write(service.rules_path(), PRIVATE_TOO).unwrap();
    wait_for(&service, "private/secret.txt", Code::Ok).await;
    let stale = "storage_grants_rules_stale";
    let refused = "storage_grants_rules_reloads_total{result=\"refused\"}";
    let before = metric(&metrics_when(port, stale, |v| v == 0).await, refused);

    std::fs::remove_file(service.rules_path()).unwrap();
    // Every poll (200 ms) retries: several refusals, not one.
    let text = metrics_when(port, refused, |n| n >= before + 3).await;
    assert_eq!(metric(&text, stale), 1);
    wait_for(&service, "private/secret.txt", Code::Ok).await;
    wait_for(&service, "public/hello.txt", Code::Ok).await;

    // The file back: in force again, and no longer stale.
    std::fs::write(service.rules_path(), Setup::new().rules).unwrap();
    wait_for(&service, "private/secret.txt", Code::PermissionDenied).await;
    metrics_when(port, stale, |v| v == 0).await;

    // A FIFO in its place that nobody writes: refused at once (a read would wait for
    // ever, and hold every later reload and the exit), and a file put back after it
    // is read.
    let before = metric(&support::scrape(port).await, refused);
    std::fs::remove_file(service.rules_path()).unwrap();
    let made = std::process::Command::new("mkfifo")
        .arg(service.rules_path())
        .status()
        .unwrap();
    assert!(made.success());
    let text = metrics_when(port, refused, |n| n >= before + 2).await;
    assert_eq!(metric(&text, stale), 1);
    std::fs::remove_file(service.rules_path()).unwrap();
    std::fs::write(service.rules_path(), PRIVATE_TOO).unwrap();
    wait_for(&service, "private/secret.txt", Code::Ok).await;
    metrics_when(port, stale, |v| v == 0).await;
}

#[tokio::test]
async fn empty_rules_file_revokes_everything() {
    // An empty file is a valid rule set of no rules: the way to revoke every grant.
    let store = demo_store().await;
    let service = Service::start(&store, Setup::new()).await;
    wait_for(&service, "public/hello.txt", Code::Ok).await;
    std::fs::write(service.rules_path(), "").unwrap();
    wait_for(&service, "public/hello.txt", Code::PermissionDenied).await;
}
