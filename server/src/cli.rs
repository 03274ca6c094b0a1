//! Command line: `serve`, `config`, and `topic create|list|describe|delete` against a running
//! server's admin API.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};

use crate::admin::client;

#[derive(Parser, Debug)]
#[command(
    name = "switchboard",
    version,
    about = "One endpoint for Kafka, MQTT and AMQP clients"
)]
pub struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the server (the default when no command is given).
    Serve(ServeArgs),
    /// Print the embedded default configuration (every key, commented).
    Config {
        /// Print the effective configuration after file, environment and flags instead.
        #[arg(long)]
        effective: bool,
        #[command(flatten)]
        sources: ConfigSources,
    },
    /// Manage topics on a running server through its admin API.
    Topic {
        /// Admin address of the server.
        #[arg(
            long,
            default_value = "127.0.0.1:8080",
            env = "SWITCHBOARD_ADMIN_ADDR",
            global = true
        )]
        admin: String,
        #[command(subcommand)]
        action: TopicAction,
    },
}

#[derive(clap::Args, Debug, Default)]
pub struct ConfigSources {
    /// A TOML file overriding the embedded defaults.
    #[arg(long, short = 'c', env = "SWITCHBOARD_CONFIG")]
    pub config: Option<PathBuf>,
    /// Override one key, e.g. `--set kafka.listen=127.0.0.1:19092` (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub sets: Vec<String>,
    /// Shorthand for `--set data_dir=DIR`.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
}

#[derive(clap::Args, Debug, Default)]
pub struct ServeArgs {
    #[command(flatten)]
    pub sources: ConfigSources,
}

#[derive(Subcommand, Debug)]
enum TopicAction {
    /// Create a topic.
    Create {
        name: String,
        #[arg(long, short = 'p', default_value_t = 1)]
        partitions: u32,
        /// Topic config, e.g. `--config retention.ms=60000` (repeatable).
        #[arg(long = "config", value_name = "KEY=VALUE")]
        configs: Vec<String>,
    },
    /// List topics.
    List,
    /// Show a topic's partitions, offsets and config.
    Describe { name: String },
    /// Delete a topic and its data.
    Delete { name: String },
}

impl ConfigSources {
    pub fn load(&self) -> anyhow::Result<switchboard_config::Config> {
        let mut sets = Vec::new();
        if let Some(d) = &self.data_dir {
            sets.push(format!(
                "data_dir={}",
                toml_string(&d.display().to_string())
            ));
        }
        sets.extend(self.sets.iter().cloned());
        let env = std::env::vars()
            .filter(|(k, _)| k != "SWITCHBOARD_CONFIG" && k != "SWITCHBOARD_ADMIN_ADDR");
        Ok(switchboard_config::load(
            self.config.as_deref(),
            env,
            &sets,
        )?)
    }
}

fn toml_string(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command.unwrap_or(Command::Serve(ServeArgs::default())) {
        Command::Serve(args) => {
            let config = args.sources.load()?;
            crate::serve::run(config)
        }
        Command::Config { effective, sources } => {
            if effective {
                print!("{}", sources.load()?.to_toml());
            } else {
                print!("{}", switchboard_config::DEFAULT_TOML);
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Topic { admin, action } => {
            topic(&admin, action)?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn topic(admin: &str, action: TopicAction) -> anyhow::Result<()> {
    match action {
        TopicAction::Create {
            name,
            partitions,
            configs,
        } => {
            let mut config = BTreeMap::new();
            for c in configs {
                let Some((k, v)) = c.split_once('=') else {
                    bail!("--config wants KEY=VALUE, got {c:?}");
                };
                config.insert(k.to_owned(), v.to_owned());
            }
            let body =
                serde_json::json!({ "name": name, "partitions": partitions, "config": config });
            let out = client::request(admin, "POST", "/api/topics", Some(&body.to_string()))?;
            println!("created topic {name} with {partitions} partition(s)");
            let _ = out;
        }
        TopicAction::List => {
            let out = client::request(admin, "GET", "/api/topics", None)?;
            let topics: Vec<serde_json::Value> =
                serde_json::from_str(&out).context("bad answer")?;
            for t in topics {
                println!(
                    "{}\t{} partition(s)",
                    t["name"].as_str().unwrap_or("?"),
                    t["partitions"]
                );
            }
        }
        TopicAction::Describe { name } => {
            let out = client::request(admin, "GET", &format!("/api/topics/{name}"), None)?;
            let v: serde_json::Value = serde_json::from_str(&out).context("bad answer")?;
            println!("{}", serde_json::to_string_pretty(&v)?);
        }
        TopicAction::Delete { name } => {
            client::request(admin, "DELETE", &format!("/api/topics/{name}"), None)?;
            println!("deleted topic {name}");
        }
    }
    Ok(())
}
