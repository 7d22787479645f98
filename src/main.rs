//! `storage-grants`: parse the arguments, load the settings, start logging, serve until
//! SIGTERM/SIGINT.

use std::path::PathBuf;
use std::process::ExitCode;

use storage_grants::config::Settings;
use storage_grants::{server, telemetry};

const USAGE: &str = "\
storage-grants: short-lived, narrowly scoped access to object storage, over gRPC

USAGE:
    storage-grants [serve] [--config FILE] [--listen ADDR]
    storage-grants --check-config [--config FILE]

OPTIONS:
    --config FILE     TOML config file (or STORAGE_GRANTS_CONFIG); defaults apply without one
    --listen ADDR     address to listen on, e.g. 127.0.0.1:50051 (overrides the config)
    --check-config    validate the config and rules files, print what is wrong, and exit
    -h, --help        print this help
    -V, --version     print the version

ENVIRONMENT:
    STORAGE_GRANTS_<SECTION>__<KEY>   overrides a config key, e.g. STORAGE_GRANTS_STORAGE__ENDPOINT
    AWS_*                             the service's own storage credentials (standard AWS chain)
    RUST_LOG                          log level (default info)
";

struct Args {
    config: Option<PathBuf>,
    listen: Option<String>,
    check_config: bool,
}

fn parse_args() -> Result<Option<Args>, String> {
    let mut args = Args {
        config: std::env::var_os("STORAGE_GRANTS_CONFIG").map(PathBuf::from),
        listen: None,
        check_config: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "serve" => {}
            "--check-config" | "check-config" => args.check_config = true,
            "--config" => args.config = Some(it.next().ok_or("--config needs a file")?.into()),
            "--listen" => args.listen = Some(it.next().ok_or("--listen needs an address")?),
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
    Ok(Some(args))
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(Some(args)) => args,
        Ok(None) => return ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}\n\n{USAGE}");
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
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("the tokio runtime starts on any supported platform");
    if args.check_config {
        return runtime.block_on(check_config(&settings));
    }
    telemetry::init(settings.log_format);
    tracing::info!(settings = ?settings, "configuration loaded");
    match runtime.block_on(serve(settings)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "storage-grants failed");
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn check_config(settings: &Settings) -> ExitCode {
    match server::check_config(settings).await {
        Ok(checked) => {
            println!(
                "config OK: listen {}, {} rule(s) from {}",
                settings.listen,
                checked.rules.len(),
                settings.grants.rules_file.display()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}

async fn serve(settings: Settings) -> Result<(), Box<dyn std::error::Error>> {
    let aws = storage_grants::aws::load_from_env().await;
    let listener = tokio::net::TcpListener::bind(settings.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", settings.listen))?;
    server::run(settings, aws, listener, shutdown_signal()).await?;
    Ok(())
}

/// Completes on SIGTERM (Kubernetes' stop signal) or SIGINT (Ctrl-C).
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}
