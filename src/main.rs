//! `vault-secrets-plugin`: arguments → tracing → configuration → the command → exit code.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use vault_secrets::api::admin;
use vault_secrets::config::{Config, Overrides, DEFAULT_CONFIG_PATH};

#[derive(Parser)]
#[command(version = vault_secrets::VERSION, about = "Docker volume plugin: Vault/OpenBao secrets on a per-container tmpfs")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the plugin (foreground; logs to stderr; SIGTERM/SIGINT stop it, mounts are kept).
    Serve {
        /// Configuration file [default: $VAULT_SECRETS_CONFIG or /etc/vault-secrets/config.toml]
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Validate the configuration, reach Vault, check the identity; exit 0 only if all is well.
    Check {
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Volumes, active mounts, their tokens' and leases' remaining TTLs, last refresh, last error.
    Status {
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Fetch every source of VOLUME again now, for every mount, and swap the files.
    Rotate {
        volume: String,
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
}

fn config_path(flag: Option<PathBuf>) -> PathBuf {
    flag.or_else(|| std::env::var_os("VAULT_SECRETS_CONFIG").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG_PATH))
}

fn load(flag: Option<PathBuf>) -> anyhow::Result<Config> {
    let path = config_path(flag);
    Config::load(&path, &Overrides::from_env()).context("invalid configuration")
}

/// The admin socket `status` and `rotate` use: `VAULT_SECRETS_ADMIN_SOCKET`, else the
/// configuration's (a managed plugin's is `admin.sock` in its `runtime` directory on the host).
fn admin_socket(config: &Config) -> PathBuf {
    std::env::var_os("VAULT_SECRETS_ADMIN_SOCKET")
        .filter(|s| !s.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| config.plugin.admin_socket.clone())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        // Colour only on a terminal: dockerd (managed plugin) and journald log lines verbatim.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("VAULT_SECRETS_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    // One thread: the work is Vault round trips and small tmpfs writes; a single-threaded
    // runtime spends less CPU on hand-offs between threads than it would gain in parallelism.
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Serve { config } => vault_secrets::daemon::serve(load(config)?).await,
            Command::Status { config, json } => {
                let config = load(config)?;
                let status = admin::request(&admin_socket(&config), "GET", "/status", None).await?;
                if json {
                    println!("{}", serde_json::to_string_pretty(&status)?);
                } else {
                    let status: admin::Status = serde_json::from_value(status)
                        .context("the plugin's status is not one this build reads (a plugin of another version?); `status --json` prints it as it came")?;
                    print!("{}", admin::render_table(&status));
                }
                Ok(())
            }
            Command::Rotate { volume, config } => {
                let config = load(config)?;
                let body = serde_json::json!({ "volume": volume });
                let reply = admin::request(&admin_socket(&config), "POST", "/rotate", Some(&body))
                    .await
                    .with_context(|| format!("cannot rotate volume {volume}"))?;
                println!("rotated {} mount(s) of {volume}", reply["rotated"]);
                Ok(())
            }
            Command::Check { config } => {
                // A warning is not a failure (exit 0), but it is not "ok" either.
                for finding in vault_secrets::check::check(&load(config)?).await? {
                    println!("{finding}");
                }
                Ok(())
            }
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            exit_code(&e)
        }
    }
}

/// 78 (`EX_CONFIG` of sysexits.h) for what a restart cannot fix — an invalid configuration,
/// records of a newer build (a downgrade) — so that systemd's `RestartPreventExitStatus`
/// stops there; 1 for the rest.
fn exit_code(e: &anyhow::Error) -> ExitCode {
    let newer = e
        .downcast_ref::<vault_secrets::state::StateError>()
        .is_some_and(|e| matches!(e, vault_secrets::state::StateError::Newer { .. }));
    if newer || e.downcast_ref::<vault_secrets::config::ConfigError>().is_some() {
        ExitCode::from(78)
    } else {
        ExitCode::FAILURE
    }
}
