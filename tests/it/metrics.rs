//! Prometheus metrics on their own port: grant decisions, refusals and reloads are
//! counted, and nothing a caller sent (keys, URLs, tokens) appears.

use crate::support;

use storage_grants::proto::GrantReadRequest;
use support::{Service, Setup, TOKEN, authed, demo_store};

fn read(key: &str) -> GrantReadRequest {
    GrantReadRequest {
        bucket: "demo".into(),
        key: key.into(),
        ..Default::default()
    }
}

#[tokio::test]
async fn grant_decisions_are_counted_and_served_on_the_metrics_port() {
    let store = demo_store().await;
    let service = Service::start(
        &store,
        Setup::with_config(
            "[metrics]\nlisten = \"127.0.0.1:0\"\n[http]\nlisten = \"127.0.0.1:0\"\n",
        ),
    )
    .await;
    let port = service.metrics_port();
    // The gateway's refusals are counted with the gRPC port's: no token, a wrong one.
    let link = format!(
        "http://127.0.0.1:{}/v1/objects/demo/public/hello.txt",
        service.http_port()
    );
    for token in [None, Some("Bearer not-a-token-of-anyone")] {
        let mut request = reqwest::Client::new().get(&link);
        if let Some(token) = token {
            request = request.header("authorization", token);
        }
        assert_eq!(request.send().await.unwrap().status(), 401);
    }
    let mut client = service.client().await;
    client
        .grant_read(authed(read("public/hello.txt"), &TOKEN))
        .await
        .unwrap();
    client
        .grant_read(authed(read("public/hello.txt"), &TOKEN))
        .await
        .unwrap();
    client
        .grant_read(authed(read("private/secret.txt"), &TOKEN))
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
        if support::metric(
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
        support::metric(
            &text,
            "storage_grants_grants_total{action=\"read\",outcome=\"granted\"}"
        ),
        2
    );
    assert_eq!(
        support::metric(
            &text,
            "storage_grants_grants_total{action=\"read\",outcome=\"denied\"}"
        ),
        1
    );
    assert_eq!(
        support::metric(&text, "storage_grants_unauthenticated_total"),
        3,
        "one gRPC call and two gateway requests without a valid token"
    );
    support::keep_artifact("scrape", &text);
    for secret in ["public/", "private/", "X-Amz", TOKEN.as_str(), "dev:demo"] {
        assert!(!text.contains(secret), "{secret} reached the metrics");
    }
    let other = http
        .get(format!("http://127.0.0.1:{port}/"))
        .send()
        .await
        .unwrap();
    assert_eq!(other.status(), 404);
}

/// A connection with `concurrency_limit_per_connection` calls in flight gets
/// RESOURCE_EXHAUSTED at once for the next one, and the shed call is counted. The
/// call that holds the slot waits on an STS that accepts connections and never
/// answers.
#[tokio::test]
async fn a_call_past_the_connection_limit_is_shed_and_counted() {
    let store = demo_store().await;
    let silent_sts = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mut setup = Setup::new();
    setup.rules = r#"
[[rules]]
callers = ["dev:demo"]
bucket = "demo"
prefix = "public/"
actions = ["read", "assume-read"]
"#
    .into();
    setup.extra_config = format!(
        "[server]\nconcurrency_limit_per_connection = 1\n\
         [sts]\nrole_arn = \"arn:aws:iam::123456789012:role/scoped\"\n\
         endpoint = \"http://{}\"\ncall_timeout = \"5s\"\nmax_attempts = 1\nrole_chaining = false\n\
         [metrics]\nlisten = \"127.0.0.1:0\"\n",
        silent_sts.local_addr().unwrap()
    );
    let service = Service::start(&store, setup).await;
    let metrics_port = service.metrics_port();
    let client = service.client().await;
    let mut holder = client.clone();
    let held = tokio::spawn(async move {
        holder
            .assume_scoped(authed(
                storage_grants::proto::AssumeScopedRequest {
                    bucket: "demo".into(),
                    prefix: "public/".into(),
                    access: storage_grants::proto::Access::Read as i32,
                    ..Default::default()
                },
                &TOKEN,
            ))
            .await
    });
    let url = format!("http://127.0.0.1:{metrics_port}/metrics");
    let scrape = || async {
        match reqwest::get(&url).await {
            Ok(response) => response.text().await.unwrap_or_default(),
            // Not listening yet: the service is still starting.
            Err(_) => String::new(),
        }
    };
    let in_flight = |text: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix("storage_grants_rpc_in_flight "))
            .map_or(0, |v| v.parse::<u64>().unwrap())
    };
    // The slot is taken once the first call is in flight.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while in_flight(&scrape().await) < 1 {
        assert!(
            std::time::Instant::now() < deadline,
            "the first call never started"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let shed = client
        .clone()
        .grant_read(authed(read("public/hello.txt"), &TOKEN))
        .await
        .expect_err("past the limit");
    assert_eq!(shed.code(), tonic::Code::ResourceExhausted);
    let text = scrape().await;
    assert_eq!(
        support::metric(&text, "storage_grants_rpc_load_shed_total"),
        1
    );
    assert_eq!(
        support::metric(
            &text,
            "storage_grants_rpc_duration_seconds_count{method=\"GrantRead\",code=\"RESOURCE_EXHAUSTED\"}"
        ),
        1
    );
    support::keep_artifact("scrape", &text);
    // The held call ends when STS times out; the slot is free again.
    let held = held.await.unwrap().expect_err("STS never answers");
    assert_eq!(held.code(), tonic::Code::Unavailable);
    client
        .clone()
        .grant_read(authed(read("public/hello.txt"), &TOKEN))
        .await
        .expect("the slot is free again");
}
