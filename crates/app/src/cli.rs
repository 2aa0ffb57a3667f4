//! The command line: `banyan [serve]`, `banyan seed`, `banyan dead-letters ...` (the bench is
//! its own binary, `banyan-bench`).

use std::{path::PathBuf, process::ExitCode};

use banyan_bus::dead_letter;
use banyan_db::Db;
use clap::{Parser, Subcommand};
use uuid::Uuid;

use crate::{
    config::{self, LogFormat},
    operations::LetterStatus,
    server::{self, Server},
    telemetry,
};

#[derive(Debug, Parser)]
#[command(
    name = "banyan",
    version,
    about = "A modular-monolith shop that grows into services.",
    long_about = "A modular-monolith shop that grows into services.\n\n\
        Without a command it serves, and takes serve's flags: `banyan --database-url \
        postgres://...` is `banyan serve --database-url postgres://...`.",
    after_help = "Every setting comes from config/default.toml, then each --config file, then \
        environment variables BANYAN_<SECTION>__<KEY> (BANYAN_SERVER__ADDR=0.0.0.0:8080 sets \
        [server] addr), then flags. Logs: RUST_LOG, else log.level (BANYAN_LOG__LEVEL).",
    args_conflicts_with_subcommands = true
)]
struct Cli {
    /// Extra configuration files, layered in order over config/default.toml.
    #[arg(long = "config", value_name = "FILE", global = true)]
    config: Vec<PathBuf>,
    /// `serve`'s flags, for the default command.
    #[command(flatten)]
    serve: ServeArgs,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the shop (the default).
    Serve(ServeArgs),
    /// Fill a fresh shop with a catalog, stock, an admin and a customer (idempotent).
    Seed(DatabaseArgs),
    /// List and replay events that failed every delivery attempt.
    #[command(subcommand)]
    DeadLetters(DeadLetterCommand),
    /// A module's data: move it to a database of its own.
    #[command(subcommand)]
    Data(DataCommand),
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
enum DataCommand {
    /// Copy a module's whole storage (its tables, outbox, inbox and dead letters) from where
    /// the configuration puts it to another database, provisioned and migrated first; check
    /// every table (rows and checksum at both ends) and print the setting that switches the
    /// module to it. Stop the module's processes first: the events for it wait meanwhile in the
    /// other modules' outboxes or the NATS stream, and nothing is lost.
    #[command(after_help = "Example: banyan data move orders --to postgres://orders@db2:5432/shop")]
    Move {
        /// The module (users, catalog, inventory, cart, orders, payments, notifications).
        module: String,
        /// Where to: sqlite://<dir> or postgres://... (an empty schema or a new one).
        #[arg(long, value_name = "URL")]
        to: String,
        #[command(flatten)]
        database: DatabaseArgs,
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

/// Where the modules' databases are, for every command that opens them.
#[derive(Debug, Default, Clone, clap::Args)]
struct DatabaseArgs {
    /// sqlite://<dir> or postgres://... (database.url; BANYAN_DATABASE__URL).
    #[arg(long, value_name = "URL")]
    database_url: Option<String>,
}

#[derive(Debug, Default, clap::Args)]
struct ServeArgs {
    /// Address to listen on (server.addr; BANYAN_SERVER__ADDR).
    #[arg(long)]
    addr: Option<std::net::SocketAddr>,
    /// The internal listener of a split: the bus and the registry (topology.internal_addr;
    /// BANYAN_TOPOLOGY__INTERNAL_ADDR).
    #[arg(long, value_name = "ADDR")]
    internal_addr: Option<std::net::SocketAddr>,
    /// Where `/metrics` is served (metrics.addr; BANYAN_METRICS__ADDR).
    #[arg(long, value_name = "ADDR")]
    metrics_addr: Option<std::net::SocketAddr>,
    #[command(flatten)]
    database: DatabaseArgs,
    /// auto, json or pretty (log.format; BANYAN_LOG__FORMAT). auto, the default: pretty on a
    /// terminal, JSON lines otherwise.
    #[arg(long, value_enum)]
    log_format: Option<LogFormat>,
    /// The process of the topology to run: `main` (the default) hosts every module not placed
    /// elsewhere; another name hosts the modules `[topology.modules]` places in it
    /// (topology.process; BANYAN_TOPOLOGY__PROCESS).
    #[arg(long, value_name = "NAME")]
    process: Option<String>,
}

#[derive(Debug, Subcommand)]
enum DeadLetterCommand {
    /// List dead letters, newest first, as JSON.
    List {
        /// Only this module's (users, catalog, inventory, cart, orders, payments,
        /// notifications).
        #[arg(long)]
        module: Option<String>,
        /// Only those in this state.
        #[arg(long, value_enum)]
        status: Option<LetterStatus>,
        /// At most this many per module.
        #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(i64).range(1..=10_000))]
        limit: i64,
        #[command(flatten)]
        database: DatabaseArgs,
    },
    /// Ask for a dead letter to be delivered again; the process hosting the module does it
    /// within its relay's interval.
    Replay {
        /// The module whose dead letter it is.
        module: String,
        /// The dead letter's `id`, as `list` shows it.
        id: Uuid,
        #[command(flatten)]
        database: DatabaseArgs,
    },
}

pub async fn main() -> ExitCode {
    let cli = Cli::parse();
    let command = cli.command.unwrap_or(Command::Serve(cli.serve));
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
        if let Some(url) = &args.database.database_url {
            figment = config::with(figment, "database.url", url);
        }
        if let Some(process) = &args.process {
            figment = config::with(figment, "topology.process", process);
        }
        if let Some(format) = args.log_format {
            let format = match format {
                LogFormat::Auto => "auto",
                LogFormat::Json => "json",
                LogFormat::Pretty => "pretty",
            };
            figment = config::with(figment, "log.format", format);
        }
    }
    let database = match &command {
        Command::Seed(database)
        | Command::DeadLetters(
            DeadLetterCommand::List { database, .. } | DeadLetterCommand::Replay { database, .. },
        )
        | Command::Data(DataCommand::Move { database, .. }) => database.clone(),
        _ => DatabaseArgs::default(),
    };
    if let Some(url) = &database.database_url {
        figment = config::with(figment, "database.url", url);
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
    // A one-shot command's own lines are what its user reads: its logs say only problems.
    let default_level = match &command {
        Command::Serve(_) => "info",
        _ => "warn",
    };
    telemetry::init(
        &settings.log,
        &settings.traces,
        &settings.topology.process,
        default_level,
    );
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
        Command::Seed(_) => {
            let mut settings = settings;
            settings.topology = crate::topology::TopologyConfig::default();
            crate::seed::run(settings, figment).await
        }
        Command::DeadLetters(command) => dead_letters(settings, command).await,
        Command::Data(DataCommand::Move { module, to, .. }) => {
            crate::data::move_module(&settings, &module, &to).await
        }
        Command::Identity(_) | Command::Diagram { .. } => {
            unreachable!("answered before the configuration")
        }
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        // Once, in the form every error before it took ("banyan: ..."), whatever the log format.
        Err(error) => {
            eprintln!("banyan: {}", said_once(&error));
            ExitCode::FAILURE
        }
    }
}

/// `error` and its causes on one line, each said once: many errors (sqlx's among them) repeat
/// their cause in their own message, which `{:#}` would then print again after it.
fn said_once(error: &anyhow::Error) -> String {
    let mut said = String::new();
    for cause in error.chain() {
        let text = cause.to_string();
        if said.contains(&text) {
            continue;
        }
        if !said.is_empty() {
            said.push_str(": ");
        }
        said.push_str(&text);
    }
    said
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
            eprintln!("banyan: {}", said_once(&error));
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
            ..
        } => {
            let modules = match module {
                Some(name) => vec![find(&name)?],
                None => names.clone(),
            };
            let mut letters = Vec::new();
            for module in modules {
                letters.extend(
                    dead_letter::list(
                        &open(module).await?,
                        status.map(LetterStatus::as_str),
                        limit,
                    )
                    .await?,
                );
            }
            println!("{}", serde_json::to_string_pretty(&letters)?);
        }
        DeadLetterCommand::Replay { module, id, .. } => {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("migration 1 failed: {0}")]
    struct Repeats(#[source] std::io::Error);

    #[test]
    fn an_error_s_causes_are_said_once_each() {
        let cause = std::io::Error::other("table outbox already exists");
        let error = anyhow::Error::new(Repeats(cause)).context("module payments");
        assert_eq!(
            said_once(&error),
            "module payments: migration 1 failed: table outbox already exists"
        );
        let plain = anyhow::anyhow!("disk full").context("cannot write");
        assert_eq!(said_once(&plain), "cannot write: disk full");
    }
}
