//! The command line: `banyan [serve]`, `banyan seed`, `banyan dead-letters ...` (the bench is
//! its own binary, `banyan-bench`).

use std::{path::PathBuf, process::ExitCode};

use banyan_bus::dead_letter;
use banyan_db::Db;
use clap::{Parser, Subcommand};
use uuid::Uuid;

use crate::{
    config::{self, LogFormat},
    server::{self, Server},
    telemetry,
};

#[derive(Debug, Parser)]
#[command(
    name = "banyan",
    version,
    about = "A modular-monolith shop that grows into services."
)]
struct Cli {
    /// Extra configuration files, layered in order over config/default.toml.
    #[arg(long = "config", value_name = "FILE", global = true)]
    config: Vec<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the shop (the default).
    Serve(ServeArgs),
    /// Fill a fresh shop with a catalog, stock, an admin and a customer (idempotent).
    Seed,
    /// List and replay events that failed every delivery attempt.
    #[command(subcommand)]
    DeadLetters(DeadLetterCommand),
    /// Make a process's identity: an Ed25519 key for it, and its public key for every
    /// process's configuration.
    #[command(subcommand)]
    Identity(IdentityCommand),
    /// Write the architecture diagram (docs/architecture.mmd and .svg) from what the modules
    /// register: the requests each answers and sends, the events each publishes and follows.
    Diagram {
        /// The repository to write `docs/` under.
        #[arg(long, value_name = "DIR", default_value = ".")]
        root: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
enum IdentityCommand {
    /// Print a new key pair, as TOML.
    New {
        /// The process it is for (named in the output).
        #[arg(long, value_name = "NAME", default_value = "main")]
        process: String,
    },
}

#[derive(Debug, Default, clap::Args)]
struct ServeArgs {
    /// Address to listen on (server.addr).
    #[arg(long)]
    addr: Option<std::net::SocketAddr>,
    /// The internal listener of a split: the bus and the registry (topology.internal_addr).
    #[arg(long, value_name = "ADDR")]
    internal_addr: Option<std::net::SocketAddr>,
    /// Where `/metrics` is served (metrics.addr).
    #[arg(long, value_name = "ADDR")]
    metrics_addr: Option<std::net::SocketAddr>,
    /// sqlite://<dir> or postgres://... (database.url).
    #[arg(long)]
    database_url: Option<String>,
    /// json or pretty (log.format).
    #[arg(long, value_enum)]
    log_format: Option<LogFormat>,
    /// The process of the topology to run: `main` (the default) hosts every module not placed
    /// elsewhere; another name hosts the modules `[topology.modules]` places in it
    /// (topology.process).
    #[arg(long, value_name = "NAME")]
    process: Option<String>,
}

#[derive(Debug, Subcommand)]
enum DeadLetterCommand {
    /// List dead letters, newest first.
    List {
        /// Only this module's.
        #[arg(long)]
        module: Option<String>,
        /// dead, replay_requested, replaying or replayed.
        #[arg(long)]
        status: Option<String>,
        #[arg(long, default_value_t = 100)]
        limit: i64,
    },
    /// Ask for a dead letter to be delivered again; the process hosting the module does it.
    Replay { module: String, id: Uuid },
}

pub async fn main() -> ExitCode {
    let cli = Cli::parse();
    let command = cli.command.unwrap_or(Command::Serve(ServeArgs::default()));
    // Needs no configuration.
    if let Command::Identity(IdentityCommand::New { process }) = &command {
        let (key, public) = crate::identity::new_key_pair();
        println!(
            "# For process `{process}` only, secret: BANYAN_TOPOLOGY__IDENTITY__KEY, or\n\
             # [topology.identity] key = \"{key}\"\n\
             # For every process's configuration:\n\
             [topology.identity.public_keys]\n{process} = \"{public}\""
        );
        return ExitCode::SUCCESS;
    }
    if let Command::Diagram { root } = &command {
        return diagram(root).await;
    }
    let mut figment = match config::layers(&cli.config) {
        Ok(figment) => figment,
        Err(error) => {
            eprintln!("banyan: cannot start: {error}");
            return ExitCode::from(2);
        }
    };
    if let Command::Serve(args) = &command {
        if let Some(addr) = args.addr {
            figment = config::with(figment, "server.addr", addr.to_string());
        }
        if let Some(addr) = args.internal_addr {
            figment = config::with(figment, "topology.internal_addr", addr.to_string());
        }
        if let Some(addr) = args.metrics_addr {
            figment = config::with(figment, "metrics.addr", addr.to_string());
        }
        if let Some(url) = &args.database_url {
            figment = config::with(figment, "database.url", url);
        }
        if let Some(process) = &args.process {
            figment = config::with(figment, "topology.process", process);
        }
        if let Some(format) = args.log_format {
            let format = match format {
                LogFormat::Json => "json",
                LogFormat::Pretty => "pretty",
            };
            figment = config::with(figment, "log.format", format);
        }
    }
    let mut settings = match config::load(&figment) {
        Ok(settings) => settings,
        Err(error) => {
            eprintln!("banyan: cannot start: {error}");
            return ExitCode::from(2);
        }
    };
    // Seeding and the dead-letter commands listen nowhere.
    let listening = match &command {
        Command::Serve(_) => settings.listening(),
        _ => Vec::new(),
    };
    let origins = match settings.resolve_secrets(&listening) {
        Ok(origins) => origins,
        Err(error) => {
            eprintln!("banyan: cannot start: {error}");
            return ExitCode::from(2);
        }
    };
    telemetry::init(&settings.log, &settings.traces, &settings.topology.process);
    for (key, origin) in origins {
        if origin == crate::secrets::Origin::Generated {
            tracing::info!(
                key,
                dir = %settings.server.state_dir.display(),
                "Using a generated development secret (loopback only); set your own to listen \
                 elsewhere."
            );
        }
    }
    let outcome = match command {
        Command::Serve(_) => serve(settings, figment).await,
        // Seeding runs every module in this one process, whatever the topology.
        Command::Seed => {
            let mut settings = settings;
            settings.topology = crate::topology::TopologyConfig::default();
            crate::seed::run(settings, figment).await
        }
        Command::DeadLetters(command) => dead_letters(settings, command).await,
        Command::Identity(_) | Command::Diagram { .. } => {
            unreachable!("answered before the configuration")
        }
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(error = format!("{error:#}"), "Banyan failed.");
            eprintln!("banyan: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// `banyan diagram`: needs no configuration, since it draws the code, not a deployment.
async fn diagram(root: &std::path::Path) -> ExitCode {
    let written = match crate::diagram::Architecture::of_the_code().await {
        Ok(architecture) => architecture.write(root),
        Err(error) => Err(error),
    };
    match written {
        Ok(files) => {
            for file in files {
                println!("wrote {}", file.display());
            }
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("banyan: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(settings: config::Settings, figment: figment::Figment) -> anyhow::Result<()> {
    let addr = settings.server.addr;
    let server = Server::build(settings, figment).await?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {addr}: {e}"))?;
    server.run(listener, server::shutdown_signal()).await
}

async fn dead_letters(
    settings: config::Settings,
    command: DeadLetterCommand,
) -> anyhow::Result<()> {
    let open = |module: &'static str| {
        let settings = settings.clone();
        async move {
            let migrations = crate::modules::all_modules()
                .into_iter()
                .find(|m| m.name() == module)
                .map(|m| m.migrations())
                .ok_or_else(|| anyhow::anyhow!("no module named {module}"))?;
            Ok::<_, anyhow::Error>(
                Db::open(
                    module,
                    &settings.database,
                    &[&*banyan_bus::MESSAGING_MIGRATIONS, migrations],
                )
                .await?,
            )
        }
    };
    let names: Vec<&'static str> = crate::modules::all_modules()
        .iter()
        .map(|m| m.name())
        .collect();
    let find = |name: &str| {
        names.iter().copied().find(|n| *n == name).ok_or_else(|| {
            anyhow::anyhow!("no module named {name}; modules are {}", names.join(", "))
        })
    };
    match command {
        DeadLetterCommand::List {
            module,
            status,
            limit,
        } => {
            let modules = match module {
                Some(name) => vec![find(&name)?],
                None => names.clone(),
            };
            let mut letters = Vec::new();
            for module in modules {
                letters.extend(
                    dead_letter::list(&open(module).await?, status.as_deref(), limit).await?,
                );
            }
            println!("{}", serde_json::to_string_pretty(&letters)?);
        }
        DeadLetterCommand::Replay { module, id } => {
            let db = open(find(&module)?).await?;
            if dead_letter::request_replay(&db, id).await? {
                println!("Replay of {id} requested; the process hosting {module} delivers it.");
            } else {
                anyhow::bail!("no dead letter {id} awaiting replay in {module}");
            }
        }
    }
    Ok(())
}
