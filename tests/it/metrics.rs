//! Prometheus metrics on their own port: grant decisions, refusals and reloads are
//! counted, and nothing a caller sent (keys, URLs, tokens) appears.

use crate::support;

use storage_grants::proto::GrantReadRequest;
use support::{Service, Setup, TOKEN, authed, demo_store, free_port};

fn read(key: &str) -> GrantReadRequest {
    GrantReadRequest {
        bucket: "demo".into(),
        key: key.into(),
        ..Default::default()
    }
}

fn value(text: &str, series: &str) -> u64 {
    text.lines()
        .find_map(|l| {
            l.strip_prefix(series)
                .and_then(|rest| rest.strip_prefix(' '))
        })
        .unwrap_or_else(|| panic!("no {series} in:\n{text}"))
        .parse()
        .unwrap()
}

#[tokio::test]
async fn grant_decisions_are_counted_and_served_on_the_metrics_port() {
    let store = demo_store().await;
    let port = free_port();
    let mut setup = Setup::new();
    setup.extra_config = format!("[metrics]\nlisten = \"127.0.0.1:{port}\"\n");
    let service = Service::start(&store, setup).await;
    let mut client = service.client().await;
    client
        .grant_read(authed(read("public/hello.txt"), TOKEN))
        .await
        .unwrap();
    client
        .grant_read(authed(read("public/hello.txt"), TOKEN))
        .await
        .unwrap();
    client
        .grant_read(authed(read("private/secret.txt"), TOKEN))
        .await
        .unwrap_err();
    client
        .grant_read(read("public/hello.txt"))
        .await
        .unwrap_err();
    std::fs::write(service.rules_path(), "[[rules]\nnot toml").unwrap();

    let http = reqwest::Client::new();
    let url = format!("http://127.0.0.1:{port}/metrics");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let text = loop {
        let response = http.get(&url).send().await.expect("metrics endpoint");
        assert_eq!(response.status(), 200);
        let text = response.text().await.unwrap();
        // The broken rules file is refused by the watcher within a few polls.
        if value(
            &text,
            "storage_grants_rules_reloads_total{result=\"refused\"}",
        ) > 0
        {
            break text;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "reload refusal never counted"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    assert_eq!(
        value(
            &text,
            "storage_grants_grants_total{action=\"read\",outcome=\"granted\"}"
        ),
        2
    );
    assert_eq!(
        value(
            &text,
            "storage_grants_grants_total{action=\"read\",outcome=\"denied\"}"
        ),
        1
    );
    assert_eq!(value(&text, "storage_grants_unauthenticated_total"), 1);
    for secret in ["public/", "private/", "X-Amz", TOKEN, "dev:demo"] {
        assert!(!text.contains(secret), "{secret} reached the metrics");
    }
    let other = http
        .get(format!("http://127.0.0.1:{port}/"))
        .send()
        .await
        .unwrap();
    assert_eq!(other.status(), 404);
}
