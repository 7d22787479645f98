//! The binary as an operator runs it: `--check-config` and start-up refuse bad files
//! with the file, the line and what to change, and never serve.

use std::path::Path;
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_storage-grants");

const GOOD_RULES: &str = r#"
[[rules]]
callers = ["dev:demo"]
bucket = "demo"
prefix = "public/"
actions = ["read"]
"#;

fn run(dir: &Path, config: &str, rules: &str, args: &[&str]) -> Output {
    std::fs::write(dir.join("config.toml"), config).unwrap();
    std::fs::write(dir.join("rules.toml"), rules).unwrap();
    Command::new(BIN)
        .arg("--config")
        .arg(dir.join("config.toml"))
        .args(args)
        // The service's own credentials are not needed to check or refuse a file.
        .env_remove("STORAGE_GRANTS_CONFIG")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .output()
        .expect("run storage-grants")
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn check_config_accepts_a_good_config() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(
        dir.path(),
        "listen = \"127.0.0.1:0\"\n",
        GOOD_RULES,
        &["--check-config"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("config OK") && stdout.contains("1 rule"),
        "{stdout}"
    );
    assert!(!stderr(&out).contains("warning"), "{}", stderr(&out));
}

#[test]
fn check_config_warns_that_an_empty_rules_file_refuses_everything() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(
        dir.path(),
        "listen = \"127.0.0.1:0\"\n",
        "",
        &["--check-config"],
    );
    // Valid (a chart may ship its rules later), but said out loud.
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("warning: the rules file holds no rule: every grant will be refused"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn check_config_names_file_and_line_of_a_bad_rule() {
    let dir = tempfile::tempdir().unwrap();
    let bad = GOOD_RULES.replace("prefix = \"public/\"", "prefix = \"public\"");
    let out = run(dir.path(), "", &bad, &["--check-config"]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(err.contains("rules.toml:2:"), "{err}");
    assert!(err.contains("must end with '/'"), "{err}");
}

#[test]
fn check_config_names_the_line_of_an_unknown_config_key() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(
        dir.path(),
        "[grants]\nmax_tll = \"1h\"\n",
        GOOD_RULES,
        &["--check-config"],
    );
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(
        err.contains("config.toml") && err.contains("line 2") && err.contains("max_tll"),
        "{err}"
    );
}

#[test]
fn serve_refuses_to_start_with_a_bad_rules_file() {
    let dir = tempfile::tempdir().unwrap();
    let bad = GOOD_RULES.replace("[\"read\"]", "[\"reed\"]");
    let out = run(dir.path(), "listen = \"127.0.0.1:0\"\n", &bad, &["serve"]);
    // The exit code `--check-config` gives the same file.
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("rules.toml") && err.contains("reed"), "{err}");
    assert!(!err.contains("listening"), "it started serving: {err}");
}

#[test]
fn serve_exits_1_when_a_valid_configuration_cannot_serve() {
    let dir = tempfile::tempdir().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let config = format!("listen = \"{}\"\n", taken.local_addr().unwrap());
    let out = run(dir.path(), &config, GOOD_RULES, &["serve"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("listen: cannot listen on"), "{err}");
}

#[test]
fn dev_tokens_without_dev_mode_are_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let config = "[[identity.dev_tokens]]\ntoken = \"0123456789abcdef0123\"\ncaller = \"dev:a\"\n";
    let out = run(dir.path(), config, GOOD_RULES, &["serve"]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(err.contains("dev_mode"), "{err}");
    assert!(
        !err.contains("0123456789abcdef0123"),
        "the token was printed: {err}"
    );
}

#[test]
fn unknown_argument_prints_usage() {
    let out = Command::new(BIN).arg("--frobnicate").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("USAGE"));
}

#[test]
fn help_prints_usage_and_succeeds_in_every_mode() {
    for args in [
        &["--help"][..],
        &["-h"],
        &["credential-process", "--help"],
        &["credentials-proxy", "-h"],
    ] {
        let out = Command::new(BIN).args(args).output().unwrap();
        assert!(out.status.success(), "{args:?}: {}", stderr(&out));
        let usage = String::from_utf8_lossy(&out.stdout);
        assert!(
            usage.contains("USAGE:") && usage.contains("credential-process --endpoint URL"),
            "{args:?}: {usage}"
        );
    }
    // A real mistake still fails, after the help's point.
    let out = Command::new(BIN)
        .args(["credential-process", "--bogus"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("unknown argument '--bogus'"));
}

#[test]
fn the_credentials_proxy_needs_the_apps_token_file() {
    let out = Command::new(BIN)
        .args(["credentials-proxy", "--endpoint", "http://127.0.0.1:9"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(
        err.contains("--authorization-token-file FILE is required")
            && err.contains("credentials-proxy --endpoint URL --authorization-token-file FILE"),
        "{err}"
    );
    // The caller's own token file cannot be the app's.
    let dir = tempfile::tempdir().unwrap();
    let caller = dir.path().join("token");
    std::fs::write(&caller, "dev-caller-0123456789").unwrap();
    let out = Command::new(BIN)
        .args([
            "credentials-proxy",
            "--endpoint",
            "http://127.0.0.1:9",
            "--token-file",
        ])
        .arg(&caller)
        .arg("--authorization-token-file")
        .arg(dir.path().join(".").join("token"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("names the caller's --token-file"),
        "{}",
        stderr(&out)
    );
    // Nor a copy of it, or a file holding the token the caller sends.
    let copy = dir.path().join("copy");
    std::fs::write(&copy, "dev-caller-0123456789").unwrap();
    let out = Command::new(BIN)
        .args(["credentials-proxy", "--endpoint", "http://127.0.0.1:9"])
        .arg("--authorization-token-file")
        .arg(&copy)
        .env("STORAGE_GRANTS_TOKEN", "dev-caller-0123456789")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("holds the caller's own token")
            && !stderr(&out).contains("dev-caller"),
        "{}",
        stderr(&out)
    );
    // A file it cannot write is named, and nothing listens.
    let out = Command::new(BIN)
        .args([
            "credentials-proxy",
            "--endpoint",
            "http://127.0.0.1:9",
            "--authorization-token-file",
            "/nonexistent/dir/token",
        ])
        .env("STORAGE_GRANTS_TOKEN", "dev-unused-0123456789")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("cannot use the authorization token file /nonexistent/dir/token"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn check_config_refuses_a_jwks_file_without_usable_keys() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("jwks.json"),
        r#"{"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}"#,
    )
    .unwrap();
    let config = "[identity.jwt]\nissuer = \"https://issuer.example\"\naudiences = [\"storage-grants\"]\njwks_file = \"jwks.json\"\n";
    let out = run(dir.path(), config, GOOD_RULES, &["--check-config"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("jwks_file") && err.contains("no usable key"),
        "{err}"
    );
}

#[test]
fn a_network_listener_without_tls_is_refused_unless_plaintext_is_allowed() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(
        dir.path(),
        "listen = \"0.0.0.0:0\"\n",
        GOOD_RULES,
        &["serve"],
    );
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(
        err.contains("server.allow_plaintext") && err.contains("[server.tls]"),
        "{err}"
    );
    assert!(!err.contains("listening"), "it started serving: {err}");
    let out = run(
        dir.path(),
        "listen = \"0.0.0.0:0\"\n[server]\nallow_plaintext = true\n",
        GOOD_RULES,
        &["--check-config"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
}

#[test]
fn check_config_reports_a_template_that_can_render_a_fixed_prefix() {
    let dir = tempfile::tempdir().unwrap();
    let rules = r#"
[[rules]]
callers = ["system:serviceaccount:*:etl"]
bucket = "demo"
prefix = "tenants/{namespace}/"
actions = ["read"]

[[rules]]
callers = ["svc:shared"]
bucket = "demo"
prefix = "tenants/shared/"
actions = ["read"]
"#;
    let out = run(dir.path(), "", rules, &["--check-config"]);
    // A warning, not a refusal: the fixed folder may well belong to that tenant.
    assert!(out.status.success(), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("warning")
            && err.contains("rules.toml:2")
            && err.contains("'tenants/shared/'")
            && err.contains("line 8"),
        "{err}"
    );
}

/// `--check-config` refuses what serving would refuse and says how to write it: an
/// audit file serving could not open, a `--listen` that is no address, a duration of
/// the wrong type, a list in an environment override written as a bare string; and it
/// warns of `[http]` settings that no listener serves.
#[test]
fn check_config_refuses_what_serving_would_and_says_how_to_write_it() {
    let dir = tempfile::tempdir().unwrap();
    let listen = "listen = \"127.0.0.1:0\"\n";
    let check = |config: &str| run(dir.path(), config, GOOD_RULES, &["--check-config"]);
    for (audit, says) in [
        (
            "/nonexistent/dir/audit.jsonl",
            "its directory /nonexistent/dir",
        ),
        (".", "is a directory"),
    ] {
        let out = check(&format!("{listen}[audit]\nfile = \"{audit}\"\n"));
        assert_eq!(out.status.code(), Some(2), "{audit}: {}", stderr(&out));
        let err = stderr(&out);
        assert!(err.contains("audit.file") && err.contains(says), "{err}");
    }
    // A new file in an existing directory is fine (serving creates it); none is made.
    let out = check(&format!("{listen}[audit]\nfile = \"audit.jsonl\"\n"));
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!dir.path().join("audit.jsonl").exists());

    let out = check(&format!("{listen}[grants]\nmax_ttl = true\n"));
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("a duration such as \"90s\""),
        "{}",
        stderr(&out)
    );

    for (config, says) in [
        (
            "[grants]\nmax_ttl = \"1s\"\n",
            "grants.default_ttl: is 5m and grants.max_ttl is 1s",
        ),
        (
            "[grants]\nrules_file = \"nope.toml\"\n",
            "grants.rules_file: cannot read",
        ),
    ] {
        let out = check(&format!("{listen}{config}"));
        assert_eq!(out.status.code(), Some(2));
        assert!(stderr(&out).contains(says), "{}", stderr(&out));
    }

    // A JWKS CA file serving could not read is named as the setting it is.
    let out = check(&format!(
        "{listen}[identity.jwt]\nissuer = \"https://issuer.example\"\n\
         audiences = [\"storage-grants\"]\njwks_url = \"https://issuer.example/jwks\"\n\
         jwks_ca_file = \"/nonexistent/ca.crt\"\n"
    ));
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("identity.jwt.jwks_ca_file: cannot read /nonexistent/ca.crt"),
        "{}",
        stderr(&out)
    );

    let out = check(&format!("{listen}[http]\nupload_bucket = \"demo\"\n"));
    assert!(out.status.success(), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("warning: [http] sets upload_bucket but no listen"),
        "{err}"
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("gateway off"), "{stdout}");

    let out = run(
        dir.path(),
        listen,
        GOOD_RULES,
        &["--check-config", "--listen", "localhost:50051"],
    );
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(
        err.contains("--listen 'localhost:50051' is not an address; write IP:PORT")
            && !err.contains("STORAGE_GRANTS_LISTEN"),
        "{err}"
    );

    // An OTEL_* value serving would refuse (a misspelt sampler would export every trace).
    std::fs::write(dir.path().join("config.toml"), listen).unwrap();
    let out = Command::new(BIN)
        .arg("--config")
        .arg(dir.path().join("config.toml"))
        .arg("--check-config")
        .env_remove("STORAGE_GRANTS_CONFIG")
        .env("OTEL_TRACES_SAMPLER", "alwaysoff")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("OTEL_TRACES_SAMPLER=alwaysoff"),
        "{}",
        stderr(&out)
    );

    let out = Command::new(BIN)
        .arg("--config")
        .arg(dir.path().join("config.toml"))
        .arg("--check-config")
        .env_remove("STORAGE_GRANTS_CONFIG")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("STORAGE_GRANTS_HTTP__ALLOWED_ORIGINS", "https://a.example")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("write a TOML array, e.g. '[\"https://a.example\"]'"),
        "{}",
        stderr(&out)
    );
}

/// The client modes check `--endpoint` before dialling and tell a connection that
/// failed from a service that refused; a usage error prints that mode's usage only.
#[test]
fn credential_process_checks_its_endpoint_and_says_when_the_service_is_unreachable() {
    // A port nothing listens on: bound, then released.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let run = |endpoint: &str| {
        Command::new(BIN)
            .args([
                "credential-process",
                "--endpoint",
                endpoint,
                "--bucket",
                "demo",
                "--prefix",
                "public/",
            ])
            .env("STORAGE_GRANTS_TOKEN", "dev-token-for-the-cli-test")
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .output()
            .unwrap()
    };
    for endpoint in ["127.0.0.1:50051", "ftp://127.0.0.1:50051"] {
        let out = run(endpoint);
        assert_eq!(out.status.code(), Some(2), "{endpoint}");
        let err = stderr(&out);
        assert!(
            err.contains("needs an https:// or http:// scheme")
                && err.contains("storage-grants credential-process --endpoint URL")
                && !err.contains("ENVIRONMENT"),
            "{err}"
        );
    }
    // A user and a query in the endpoint are never repeated (they may be credentials).
    let out = run(&format!("http://user:hunter2@{closed}/?token=s3cret"));
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("cannot reach the service at")
            && !err.contains("hunter2")
            && !err.contains("s3cret"),
        "{err}"
    );
    let endpoint = format!("http://{closed}");
    let out = run(&endpoint);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains(&format!("cannot reach the service at {endpoint}"))
            && err.contains("Connection refused")
            && !err.contains("the service refused")
            && !err.contains("dev-token-for-the-cli-test"),
        "{err}"
    );
}

#[test]
fn a_refusal_exits_2_even_when_stderr_is_gone() {
    // A pipe whose reader exited (`storage-grants … 2>&1 | head -c 100`): writing the
    // error fails, and the exit code must still say why the process ended (a panic on
    // that write made it 101).
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("config.toml"), "listen = [\n").unwrap();
    let mut child = Command::new(BIN)
        .arg("--config")
        .arg(dir.path().join("config.toml"))
        .arg("--check-config")
        .env_remove("STORAGE_GRANTS_CONFIG")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stderr.take());
    assert_eq!(child.wait().unwrap().code(), Some(2));
}

/// A FIFO `audit.fifo` in `dir`.
fn audit_fifo(dir: &Path) -> std::path::PathBuf {
    let fifo = dir.join("audit.fifo");
    let made = Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(made.success());
    fifo
}

#[test]
fn an_audit_fifo_nobody_reads_is_refused_instead_of_waited_on() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = audit_fifo(dir.path());
    let config = format!("[audit]\nfile = \"{}\"\n", fifo.display());
    let started = std::time::Instant::now();
    let out = run(dir.path(), &config, GOOD_RULES, &["serve"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("a FIFO that no process reads"),
        "{}",
        stderr(&out)
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
    // `--check-config` cannot tell whether a reader will be there when the service
    // starts (a shipper started after the check): a FIFO passes.
    let out = run(dir.path(), &config, GOOD_RULES, &["--check-config"]);
    assert!(out.status.success(), "{}", stderr(&out));
}

#[test]
fn check_config_leaves_an_audit_fifo_and_its_reader_alone() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = audit_fifo(dir.path());
    // The log shipper, waiting for the service (its open waits for a writer).
    let (done_tx, done) = std::sync::mpsc::channel();
    let reader = {
        let fifo = fifo.clone();
        std::thread::spawn(move || {
            let mut text = String::new();
            std::io::Read::read_to_string(&mut std::fs::File::open(&fifo).unwrap(), &mut text)
                .unwrap();
            done_tx.send(()).unwrap();
        })
    };
    std::thread::sleep(std::time::Duration::from_millis(100));
    let config = format!("[audit]\nfile = \"{}\"\n", fifo.display());
    let out = run(dir.path(), &config, GOOD_RULES, &["--check-config"]);
    assert!(out.status.success(), "{}", stderr(&out));
    // Opening and closing it would have ended the reader's input.
    assert!(
        done.recv_timeout(std::time::Duration::from_millis(500))
            .is_err(),
        "--check-config ended the FIFO reader's input"
    );
    drop(std::fs::OpenOptions::new().write(true).open(&fifo).unwrap());
    reader.join().unwrap();
}

/// What an operator checks before an upgrade, on a machine where the pod's Secrets
/// are not: `--skip-files` checks everything but the files the config names, and
/// still refuses what serving would refuse in the values themselves.
#[test]
fn check_config_skip_files_checks_a_rendered_config_away_from_its_pod() {
    let dir = tempfile::tempdir().unwrap();
    let config = r#"listen = "0.0.0.0:50051"

[server.tls]
cert_file = "/etc/storage-grants/tls/tls.crt"
key_file = "/etc/storage-grants/tls/tls.key"

[identity.jwt]
issuer = "https://kubernetes.default.svc"
audiences = ["storage-grants"]
jwks_url = "https://kubernetes.default.svc/openid/v1/jwks"
jwks_ca_file = "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt"
jwks_token_file = "/var/run/secrets/kubernetes.io/serviceaccount/token"

[uploads]
token_key_files = ["/etc/storage-grants/upload-keys/current"]

[audit]
file = "/var/log/storage-grants/audit.jsonl"
"#;
    // Read as serving reads them: the first missing file stops the check.
    let out = run(dir.path(), config, GOOD_RULES, &["--check-config"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("cannot read"), "{}", stderr(&out));

    let out = run(
        dir.path(),
        config,
        GOOD_RULES,
        &["--check-config", "--skip-files"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("config OK (the files it names were not read: --skip-files)")
            && stdout.contains("1 rule"),
        "{stdout}"
    );

    // The values and the rules are still checked.
    let out = run(
        dir.path(),
        &config.replace("[uploads]", "[grants]\ndefault_ttl = \"2h\"\n\n[uploads]"),
        GOOD_RULES,
        &["--check-config", "--skip-files"],
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("grants.default_ttl"),
        "{}",
        stderr(&out)
    );
    let out = run(
        dir.path(),
        config,
        &GOOD_RULES.replace("public/", "public"),
        &["--check-config", "--skip-files"],
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("rules.toml:"), "{}", stderr(&out));

    // Serving reads every file: the flag is refused there.
    let out = run(dir.path(), config, GOOD_RULES, &["--skip-files"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("--skip-files goes with --check-config"),
        "{}",
        stderr(&out)
    );
}
