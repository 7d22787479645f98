//! `storage-grants`: parse the arguments, load the settings, start logging, serve until
//! SIGTERM/SIGINT (a second one cuts the drain short).

use std::path::PathBuf;
use std::process::ExitCode;

use storage_grants::config::Settings;
use storage_grants::{server, telemetry};

/// `eprintln!` that does not panic when stderr is gone (a pipe whose reader exited):
/// the exit code still says how the process ended.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

/// The runtime that loads the settings, accepts connections and runs the background
/// tasks: one worker. Calls are served on threads of their own, one per CPU, each with
/// a single-threaded runtime (`server::cores`).
fn runtime_builder() -> tokio::runtime::Builder {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.enable_all().worker_threads(1);
    builder
}

/// mimalloc rather than the system allocator: under load, tasks on one worker thread
/// free what another allocated, and glibc then takes the owning arena's lock (threads
/// waited on it in `free`); mimalloc hands such frees back without a lock.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const USAGE: &str = "\
storage-grants: short-lived, narrowly scoped access to object storage, over gRPC

USAGE:
    storage-grants [serve] [--config FILE] [--listen ADDR]
    storage-grants --check-config [--skip-files] [--config FILE]
    storage-grants credential-process --endpoint URL --bucket B --prefix P --access A [--list]
                                      [--token-file FILE] [--ca-file FILE]
    storage-grants credentials-proxy --endpoint URL --authorization-token-file FILE
                                     [--listen 127.0.0.1:PORT] [--token-file FILE] [--ca-file FILE]

OPTIONS:
    --config FILE     TOML config file (or STORAGE_GRANTS_CONFIG); defaults apply without
                      one, and the rules file (grants.rules_file) must exist either way
    --listen ADDR     address to listen on, e.g. 127.0.0.1:50051 (overrides the config)
    --check-config    validate the config and rules files, print what is wrong, and exit
    --skip-files      with --check-config: do not read the files the config names (TLS,
                      upload keys, JWKS, the audit file's directory), which exist only
                      where the service runs; check everything else
    -h, --help        print this help
    -V, --version     print the version

CLIENT MODES (scoped credentials from a running service, over gRPC):
    credential-process  print credential_process JSON (Version 1) for ~/.aws/config
    credentials-proxy   serve the AWS container-credentials endpoint on loopback, for
                        AWS_CONTAINER_CREDENTIALS_FULL_URI=http://127.0.0.1:PORT/v1/credentials/BUCKET/PREFIX?access=read
    --endpoint URL      the service's gRPC address: https://HOST:PORT, or http://… on
                        loopback or through a mesh sidecar that encrypts (the token is sent)
    --token-file FILE   the caller's token (e.g. a projected service-account token),
                        read on every call; else STORAGE_GRANTS_TOKEN
    --ca-file FILE      PEM CA of the service's certificate (default: system roots)
    --access A          read, write or read-write; --list adds listing the prefix
    --authorization-token-file FILE
                        the app's token, which every request to the proxy must send as
                        Authorization: written there (random) unless FILE holds one; give
                        the app AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE=FILE

ENVIRONMENT:
    STORAGE_GRANTS_<SECTION>__<KEY>   overrides a config key, e.g. STORAGE_GRANTS_STORAGE__ENDPOINT
    AWS_*                             the service's own storage credentials (standard AWS chain)
    RUST_LOG                          log level (default info)
    OTEL_EXPORTER_OTLP_ENDPOINT       export traces over OTLP/gRPC there (and the other
                                      standard OTEL_* variables); unset: no export
";

struct Args {
    config: Option<PathBuf>,
    listen: Option<String>,
    check_config: bool,
    skip_files: bool,
}

fn parse_args() -> Result<Option<Args>, String> {
    let mut args = Args {
        config: std::env::var_os("STORAGE_GRANTS_CONFIG").map(PathBuf::from),
        listen: None,
        check_config: false,
        skip_files: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "serve" => {}
            "--check-config" | "check-config" => args.check_config = true,
            "--skip-files" => args.skip_files = true,
            "--config" => args.config = Some(it.next().ok_or("--config needs a file")?.into()),
            "--listen" => {
                let addr = it.next().ok_or("--listen needs an address")?;
                if addr.parse::<std::net::SocketAddr>().is_err() {
                    return Err(format!(
                        "--listen '{addr}' is not an address; write IP:PORT, e.g. \
                         127.0.0.1:50051 (host names are not resolved)"
                    ));
                }
                args.listen = Some(addr);
            }
            "-h" | "--help" => {
                print!("{USAGE}");
                return Ok(None);
            }
            "-V" | "--version" => {
                println!("storage-grants {}", env!("CARGO_PKG_VERSION"));
                return Ok(None);
            }
            other => return Err(format!("unknown argument '{other}'")),
        }
    }
    if args.skip_files && !args.check_config {
        return Err("--skip-files goes with --check-config: serving reads every file".into());
    }
    Ok(Some(args))
}

fn main() -> ExitCode {
    let mode = std::env::args().nth(1);
    if let Some(mode @ ("credential-process" | "credentials-proxy")) = mode.as_deref() {
        return client_mode(mode);
    }
    let args = match parse_args() {
        Ok(Some(args)) => args,
        Ok(None) => return ExitCode::SUCCESS,
        Err(e) => {
            say!("error: {e}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let mut env: Vec<(String, String)> = std::env::vars().collect();
    if let Some(listen) = &args.listen {
        // A flag beats the environment: apply it as the last override.
        env.push(("STORAGE_GRANTS_LISTEN".into(), format!("\"{listen}\"")));
    }
    let settings = match Settings::load(args.config.as_deref(), env) {
        Ok(settings) => settings,
        Err(e) => {
            say!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let runtime = match runtime_builder().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            say!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    if args.check_config {
        let files = if args.skip_files {
            server::NamedFiles::Skip
        } else {
            server::NamedFiles::Read
        };
        return runtime.block_on(check_config(&settings, files));
    }
    // Inside the runtime: the OTLP exporter's connection runs on it.
    let telemetry = {
        let _runtime = runtime.enter();
        telemetry::init(settings.log_format, settings.audit.file.as_deref())
    };
    let telemetry = match telemetry {
        Ok(telemetry) => telemetry,
        Err(e) => {
            say!("error: {e}");
            return ExitCode::from(2);
        }
    };
    // Logged only now that every value is validated (a refused one never reaches a
    // log), and through redacting `Debug`s: tokens, and URLs' user info and queries.
    tracing::info!(settings = ?settings, "configuration loaded");
    for warning in &settings.warnings {
        tracing::warn!("{warning}");
    }
    let code = match runtime.block_on(serve(settings)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "storage-grants failed");
            say!("error: {e}");
            // 2 as `--check-config` answers the same refusal; 1 for a failure with a
            // valid configuration (an address in use, a serving thread that failed).
            if e.is_refused_configuration() {
                ExitCode::from(2)
            } else {
                ExitCode::FAILURE
            }
        }
    };
    // The last spans (the drain's) are exported while the runtime still runs.
    let written = telemetry.shutdown();
    // A read of a file on a mount that hangs would hold the exit for ever: the
    // runtime waits for its blocking threads only this long.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    if !written && code == ExitCode::SUCCESS {
        // A log destination took nothing in its last seconds (a stalled pipe, a full
        // disk): the lines it held are lost, which the exit code says, as nothing
        // else can.
        return ExitCode::FAILURE;
    }
    code
}

async fn check_config(settings: &Settings, files: server::NamedFiles) -> ExitCode {
    let refused = |e: &dyn std::fmt::Display| {
        say!("error: {e}");
        ExitCode::from(2)
    };
    let checked = match server::check_config(settings, files).await {
        Ok(checked) => checked,
        Err(e) => return refused(&e),
    };
    if files == server::NamedFiles::Read
        && let Some(file) = &settings.audit.file
        && let Err(e) = telemetry::check_audit_file(file)
    {
        return refused(&e);
    }
    if let Err(e) = telemetry::check_trace_export() {
        return refused(&e);
    }
    for warning in &settings.warnings {
        say!("warning: {warning}");
    }
    for collision in checked.rules.collisions() {
        say!("warning: {collision}");
    }
    if let Some(warning) = checked.rules.empty_warning() {
        say!("warning: {warning}");
    }
    let gateway = settings
        .http
        .as_ref()
        .map_or_else(|| "off".to_owned(), |h| h.listen.to_string());
    let metrics = settings
        .metrics
        .listen
        .map_or_else(|| "off".to_owned(), |m| m.to_string());
    let unread = match files {
        server::NamedFiles::Read => "",
        server::NamedFiles::Skip => " (the files it names were not read: --skip-files)",
    };
    println!(
        "config OK{unread}: listen {}, gateway {gateway}, metrics {metrics}, {} rule(s) from {}",
        settings.listen,
        checked.rules.len(),
        settings.grants.rules_file.display()
    );
    ExitCode::SUCCESS
}

async fn serve(settings: Settings) -> Result<(), server::Error> {
    let aws = storage_grants::aws::load_from_env(settings.storage.region.as_deref()).await;
    let listeners = server::Listeners::bind(&settings).await?;
    server::run(settings, aws, listeners, server::StopSignals::from_os()).await?;
    Ok(())
}

/// A client mode's usage error: the error and that mode's usage lines, not the whole
/// help.
fn client_usage_error(mode: &str, error: &str) -> ExitCode {
    let lines: Vec<&str> = USAGE
        .lines()
        .skip_while(|l| !l.contains(&format!("storage-grants {mode} ")))
        .take_while(|l| !l.is_empty())
        .take(2)
        .collect();
    say!(
        "error: {error}\nusage:\n{}\n(storage-grants --help says more)",
        lines.join("\n")
    );
    ExitCode::from(2)
}

/// `credential-process` and `credentials-proxy`.
fn client_mode(mode: &str) -> ExitCode {
    use storage_grants::cli::{self, UpstreamOptions};

    let mut options = UpstreamOptions {
        token: std::env::var("STORAGE_GRANTS_TOKEN")
            .ok()
            .map(storage_grants::secret::Secret::new),
        ..UpstreamOptions::default()
    };
    let (mut bucket, mut prefix, mut access, mut list) = (None, None, None, false);
    let mut listen = String::from("127.0.0.1:9911");
    let mut app_token_file: Option<PathBuf> = None;
    let mut it = std::env::args().skip(2);
    let mut bad = None;
    while let Some(arg) = it.next() {
        let mut value = |name: &str| it.next().ok_or_else(|| format!("{name} needs a value"));
        let result = match arg.as_str() {
            "--endpoint" => value("--endpoint").map(|v| options.endpoint = v),
            "--token-file" => value("--token-file").map(|v| options.token_file = Some(v.into())),
            "--ca-file" => value("--ca-file").map(|v| options.ca_file = Some(v.into())),
            "--bucket" => value("--bucket").map(|v| bucket = Some(v)),
            "--prefix" => value("--prefix").map(|v| prefix = Some(v)),
            "--access" => value("--access").map(|v| access = Some(v)),
            "--listen" => value("--listen").map(|v| listen = v),
            "--authorization-token-file" => {
                value("--authorization-token-file").map(|v| app_token_file = Some(v.into()))
            }
            "--list" => {
                list = true;
                Ok(())
            }
            "-h" | "--help" => {
                print!("{USAGE}");
                return ExitCode::SUCCESS;
            }
            other => Err(format!("unknown argument '{other}'")),
        };
        if let Err(e) = result {
            bad = Some(e);
            break;
        }
    }
    if options.endpoint.is_empty() {
        bad.get_or_insert_with(|| "--endpoint URL is required".into());
    }
    if let (Some(app), Some(caller)) = (&app_token_file, &options.token_file)
        && (app == caller
            || std::fs::canonicalize(app)
                .ok()
                .is_some_and(|a| std::fs::canonicalize(caller).is_ok_and(|c| a == c)))
    {
        bad.get_or_insert_with(|| {
            "--authorization-token-file names the caller's --token-file: the app would send \
             the pod's own token, which stays in the sidecar; give it a file of its own"
                .into()
        });
    }
    if mode == "credentials-proxy" && app_token_file.is_none() {
        bad.get_or_insert_with(|| {
            "--authorization-token-file FILE is required: the proxy writes the app's token \
             there, and answers only requests that send it (so that a forged request or a \
             web page cannot fetch credentials from loopback)"
                .into()
        });
    }
    if let Some(e) = bad {
        return client_usage_error(mode, &e);
    }
    // The proxy's caller token as it will send it, to tell it from the app's (read
    // here for the proxy only: credential-process reads its token once, to call).
    let caller_token = (mode == "credentials-proxy")
        .then(|| {
            options
                .token
                .as_ref()
                .map(|t| t.expose().trim().to_owned())
                .or_else(|| {
                    let file = options.token_file.as_ref()?;
                    std::fs::read_to_string(file)
                        .ok()
                        .map(|t| t.trim().to_owned())
                })
        })
        .flatten();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("the tokio runtime starts on any supported platform");
    let result = runtime.block_on(async {
        let upstream = cli::Upstream::new(options)?;
        if mode == "credentials-proxy" {
            let telemetry = telemetry::init_log_only(Default::default())
                .inspect_err(|e| say!("warning: {e}"))
                .ok();
            let addr = listen
                .parse()
                .map_err(|_| cli::Error::Usage(format!("--listen '{listen}' is not an address")))?;
            let served = async {
                let token_file = app_token_file.unwrap_or_default();
                let token = cli::proxy::AppToken::load_or_create(&token_file)?;
                if caller_token
                    .as_deref()
                    .is_some_and(|caller| token.is(caller))
                {
                    return Err(cli::Error::Usage(format!(
                        "{} holds the caller's own token: the app would send the pod's token, \
                         which stays in the sidecar; give the app a file of its own",
                        token_file.display()
                    )));
                }
                let listener = cli::proxy::bind(addr).await?;
                cli::proxy::serve(listener, upstream, token, server::StopSignals::from_os()).await
            }
            .await;
            // Its log lines are written before the process exits.
            if let Some(telemetry) = telemetry {
                telemetry.shutdown();
            }
            served?;
            return Ok(());
        }
        let ask = cli::credential_process::Ask {
            bucket: bucket.ok_or_else(|| cli::Error::Usage("--bucket is required".into()))?,
            prefix: prefix.ok_or_else(|| cli::Error::Usage("--prefix is required".into()))?,
            access: cli::upstream_access(access.as_deref().unwrap_or("read"))?,
            list,
        };
        println!("{}", cli::credential_process::run(&upstream, &ask).await?);
        Ok::<(), cli::Error>(())
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(cli::Error::Usage(e)) => client_usage_error(mode, &e),
        Err(e) => {
            say!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
