//! `vault-secrets-plugin`: arguments → tracing → configuration → the command → exit code.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use vault_secrets::config::{Config, Overrides, DEFAULT_CONFIG_PATH};

#[derive(Parser)]
#[command(version, about = "Docker volume plugin: Vault/OpenBao secrets on a per-container tmpfs")]
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
}

fn config_path(flag: Option<PathBuf>) -> PathBuf {
    flag.or_else(|| std::env::var_os("VAULT_SECRETS_CONFIG").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG_PATH))
}

fn load(flag: Option<PathBuf>) -> anyhow::Result<Config> {
    let path = config_path(flag);
    Config::load(&path, &Overrides::from_env()).context("invalid configuration")
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("VAULT_SECRETS_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Serve { config } => vault_secrets::daemon::serve(load(config)?).await,
            Command::Check { config } => {
                for line in vault_secrets::daemon::check(&load(config)?).await? {
                    println!("ok: {line}");
                }
                Ok(())
            }
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
