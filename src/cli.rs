//! Command line: `serve`, `check`, `webhook`, `version` (see the contract).

use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "portcullis",
    about = "Backend-for-Frontend auth proxy",
    version
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the proxy and its admin listener.
    Serve {
        /// The YAML configuration file.
        #[arg(long, env = "PORTCULLIS_CONFIG")]
        config: PathBuf,
    },
    /// Validate a configuration file, print every problem, exit 0 (valid) or 2 (invalid).
    Check {
        #[arg(long, env = "PORTCULLIS_CONFIG")]
        config: PathBuf,
        /// Also fetch the OP's discovery and check it offers what the configuration needs
        /// (PKCE, and PAR, private_key_jwt or DPoP where configured).
        #[arg(long)]
        probe: bool,
    },
    /// Run the sidecar-injection admission webhook.
    Webhook {
        /// The webhook's YAML configuration file.
        #[arg(long)]
        config: PathBuf,
    },
    /// Print the version.
    Version,
}
