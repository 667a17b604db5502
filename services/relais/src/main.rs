//! `relais`: the one binary for every role.

use std::io::{BufRead, IsTerminal, Read};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Args, Parser, Subcommand};
use xmpp::BareJid;
use xmpp::scram::{self, ScramHash};

mod admin;
mod admin_cli;
mod config;
mod domain_cmd;
mod http;
mod nodes;
mod serve;
mod store;
mod telemetry;

use config::{Config, ConfigError};

#[derive(Parser, Debug)]
#[command(name = "relais", version, about = "Relais, an XMPP server")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the server. With no config it runs standalone for `localhost`, every role in one
    /// process, with its data in ./relais-data.
    Serve(ServeArgs),
    /// Manage accounts in the configured storage.
    #[command(subcommand)]
    User(UserCommand),
    /// Manage hosted domains in the configured storage (picked up by running servers).
    #[command(subcommand)]
    Domain(domain_cmd::DomainCommand),
    /// Storage maintenance.
    #[command(subcommand)]
    Storage(StorageCommand),
    /// Manage a running server through its admin API (see `[admin]` in the config).
    Admin(admin_cli::AdminArgs),
    /// Validate a config file and exit.
    CheckConfig {
        #[command(flatten)]
        common: Common,
        #[command(flatten)]
        node: NodeArgs,
    },
}

#[derive(Subcommand, Debug)]
enum StorageCommand {
    /// Apply the schema migrations of this build (idempotent; `serve` does it at start too).
    Migrate {
        #[command(flatten)]
        common: Common,
    },
}

/// Per-node settings that a shared config file cannot hold (in Kubernetes they come from the
/// downward API).
#[derive(Args, Debug, Clone)]
struct NodeArgs {
    /// This node's id in a cluster (a Pod name). Overrides cluster.node_id.
    #[arg(long, env = "RELAIS_NODE_ID")]
    node_id: Option<String>,
    /// The gRPC address other nodes dial, like 10.0.0.5:7400. Overrides cluster.advertise.
    #[arg(long, env = "RELAIS_ADVERTISE")]
    advertise: Option<String>,
    /// The gRPC listen address of the session and router roles. Overrides cluster.grpc.
    #[arg(long)]
    grpc: Option<String>,
}

impl NodeArgs {
    fn apply(&self, cfg: &mut config::Config) {
        if let Some(n) = &self.node_id {
            cfg.cluster.node_id = Some(n.clone());
        }
        if let Some(a) = &self.advertise {
            cfg.cluster.advertise = Some(a.clone());
        }
        if let Some(a) = &self.grpc {
            cfg.cluster.grpc.clone_from(a);
        }
    }
}

#[derive(Args, Debug, Clone)]
struct Common {
    /// The TOML config file.
    #[arg(long, short = 'c', env = "RELAIS_CONFIG")]
    config: Option<PathBuf>,
    /// The data directory (database, generated certificates). Overrides server.data_dir.
    #[arg(long, env = "RELAIS_DATA_DIR")]
    data_dir: Option<PathBuf>,
}

#[derive(Args, Debug)]
struct ServeArgs {
    #[command(flatten)]
    common: Common,
    /// A domain to host (repeatable). Overrides server.domains.
    #[arg(long = "domain")]
    domains: Vec<String>,
    /// Roles of this process: all (default), or a comma list of edge, session, router.
    #[arg(long)]
    roles: Option<String>,
    #[command(flatten)]
    node: NodeArgs,
    /// The STARTTLS client address, like 0.0.0.0:5222. Overrides listen.c2s.
    #[arg(long)]
    c2s: Option<String>,
    /// The direct-TLS client address, like 0.0.0.0:5223. Overrides listen.c2s_tls.
    #[arg(long)]
    c2s_tls: Option<String>,
    /// A PEM certificate chain for the domains given on the command line (with --key).
    #[arg(long, requires = "key")]
    cert: Option<PathBuf>,
    /// The PEM private key for --cert.
    #[arg(long, requires = "cert")]
    key: Option<PathBuf>,
}

#[derive(Subcommand, Debug)]
enum UserCommand {
    /// Create an account.
    Add {
        jid: String,
        /// Read the password from the first line of standard input.
        #[arg(long)]
        password_stdin: bool,
        #[command(flatten)]
        common: Common,
    },
    /// Change an account's password.
    Passwd {
        jid: String,
        #[arg(long)]
        password_stdin: bool,
        #[command(flatten)]
        common: Common,
    },
    /// Delete an account and all its data.
    Remove {
        jid: String,
        #[command(flatten)]
        common: Common,
    },
    /// List the accounts of a domain (of every configured domain when none is given).
    List {
        domain: Option<String>,
        #[command(flatten)]
        common: Common,
    },
    /// Create many accounts: reads lines `JID PASSWORD` from standard input.
    Import {
        #[command(flatten)]
        common: Common,
    },
}

#[derive(Debug, thiserror::Error)]
enum CliError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("storage: {0}")]
    Storage(#[from] storage::StorageError),
    #[error("{0}")]
    Usage(String),
    #[error(transparent)]
    Serve(#[from] serve::ServeError),
    #[error(transparent)]
    Domain(#[from] session::domains::DomainError),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(args) => run_serve(args),
        Command::User(cmd) => run_user(cmd),
        Command::Admin(args) => return admin_cli::run(args),
        Command::Domain(cmd) => domain_cmd::run(cmd),
        Command::Storage(StorageCommand::Migrate { common }) => load(&common).and_then(|c| {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| CliError::Usage(format!("cannot start the runtime: {e}")))?;
            let msg = rt.block_on(store::migrate(&c))?;
            println!("{msg}");
            Ok(())
        }),
        Command::CheckConfig { common, node } => load(&common).and_then(|mut c| {
            node.apply(&mut c);
            let v = c.validate()?;
            println!(
                "config ok: domains {}, roles {:?}",
                v.domains.join(", "),
                v.roles
            );
            Ok(())
        }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("relais: {e}");
            ExitCode::FAILURE
        }
    }
}

fn load(common: &Common) -> Result<Config, CliError> {
    let mut cfg = match &common.config {
        Some(p) => Config::load(p)?,
        None => Config::default(),
    };
    if let Some(d) = &common.data_dir {
        cfg.server.data_dir.clone_from(d);
    }
    Ok(cfg)
}

fn run_serve(args: ServeArgs) -> Result<(), CliError> {
    let mut cfg = load(&args.common)?;
    if !args.domains.is_empty() {
        cfg.server.domains.clone_from(&args.domains);
    }
    if let Some(r) = &args.roles {
        cfg.server.roles = vec![r.clone()];
    }
    args.node.apply(&mut cfg);
    if let Some(a) = &args.c2s {
        cfg.listen.c2s = Some(a.clone());
    }
    if let Some(a) = &args.c2s_tls {
        cfg.listen.c2s_tls = Some(a.clone());
    }
    if let (Some(cert), Some(key)) = (&args.cert, &args.key) {
        for d in &cfg.server.domains {
            if !cfg.tls.certificates.iter().any(|c| &c.domain == d) {
                cfg.tls.certificates.push(config::CertificateEntry {
                    domain: d.clone(),
                    cert: cert.clone(),
                    key: key.clone(),
                });
            }
        }
    }
    let validated = cfg.validate()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError::Usage(format!("cannot start the runtime: {e}")))?;
    rt.block_on(async {
        // The OTLP exporters need the runtime, so telemetry starts inside it.
        let t = &cfg.telemetry;
        let identity = telemetry::Identity {
            service_name: t.service_name.clone(),
            roles: validated.roles.iter().map(ToString::to_string).collect(),
            node_id: validated
                .cluster
                .as_ref()
                .map(|c| c.node_id.as_str().to_owned()),
        };
        let telemetry = telemetry::init(&cfg.log.level, t.otlp_endpoint.as_deref(), &identity)
            .map_err(|e| CliError::Usage(e.to_string()))?;
        let telemetry = std::sync::Arc::new(telemetry);
        let result = serve::serve(cfg, validated, telemetry.clone()).await;
        if let Ok(t) = std::sync::Arc::try_unwrap(telemetry) {
            t.shutdown();
        }
        result.map_err(CliError::from)
    })
}

async fn open_storage(cfg: &Config) -> Result<storage::Storage, CliError> {
    Ok(store::open(cfg).await?)
}

pub(crate) fn db_path(data_dir: &Path) -> PathBuf {
    data_dir.join("relais.db")
}

fn parse_account(jid: &str) -> Result<BareJid, CliError> {
    let j: BareJid = jid
        .parse()
        .map_err(|e| CliError::Usage(format!("`{jid}` is not a valid bare jid: {e}")))?;
    if j.local().is_none() {
        return Err(CliError::Usage(format!(
            "`{jid}` has no localpart; use user@domain"
        )));
    }
    Ok(j)
}

/// Derives stored keys for both hashes; the password itself is never stored.
fn credentials(password: &str, iterations: u32) -> Result<storage::Credentials, CliError> {
    if password.is_empty() {
        return Err(CliError::Usage("the password is empty".into()));
    }
    let prepared = scram::prepare_password(password).map_err(|_| {
        CliError::Usage("the password contains characters that are not allowed".into())
    })?;
    let keys = [ScramHash::Sha256, ScramHash::Sha1]
        .into_iter()
        .map(|h| scram::derive_keys(h, &prepared, &scram::new_salt(), iterations))
        .collect();
    Ok(storage::Credentials { keys })
}

fn read_password(from_stdin: bool) -> Result<String, CliError> {
    if from_stdin {
        let mut line = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .map_err(|e| CliError::Usage(format!("cannot read the password from stdin: {e}")))?;
        return Ok(line.trim_end_matches(['\r', '\n']).to_owned());
    }
    if !std::io::stdin().is_terminal() {
        return Err(CliError::Usage(
            "no terminal to prompt on; use --password-stdin".into(),
        ));
    }
    let a = rpassword::prompt_password("Password: ")
        .map_err(|e| CliError::Usage(format!("cannot read the password: {e}")))?;
    let b = rpassword::prompt_password("Again: ")
        .map_err(|e| CliError::Usage(format!("cannot read the password: {e}")))?;
    if a != b {
        return Err(CliError::Usage("the passwords do not match".into()));
    }
    Ok(a)
}

fn run_user(cmd: UserCommand) -> Result<(), CliError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError::Usage(format!("cannot start the runtime: {e}")))?;
    rt.block_on(async move {
        match cmd {
            UserCommand::Add {
                jid,
                password_stdin,
                common,
            } => {
                let (store, jid) = account_op(&common, &jid).await?;
                let iterations = load(&common)?.auth.scram_iterations;
                let creds = credentials(&read_password(password_stdin)?, iterations)?;
                let accounts = limited_accounts(&common, &store).await?;
                let r = accounts.create_account(&jid, &creds).await;
                r.map_err(|e| friendly(e, &jid))?;
                println!("created {jid}");
            }
            UserCommand::Passwd {
                jid,
                password_stdin,
                common,
            } => {
                let (store, jid) = account_op(&common, &jid).await?;
                let iterations = load(&common)?.auth.scram_iterations;
                let creds = credentials(&read_password(password_stdin)?, iterations)?;
                let r = store.accounts.set_credentials(&jid, &creds).await;
                r.map_err(|e| friendly(e, &jid))?;
                println!("password changed for {jid}");
            }
            UserCommand::Remove { jid, common } => {
                let (store, jid) = account_op(&common, &jid).await?;
                let r = store.accounts.delete_account(&jid).await;
                r.map_err(|e| friendly(e, &jid))?;
                println!("removed {jid}");
            }
            UserCommand::List { domain, common } => {
                let cfg = load(&common)?;
                let store = open_storage(&cfg).await?;
                let domains = match domain {
                    Some(d) => vec![d],
                    None => cfg.server.domains.clone(),
                };
                for d in domains {
                    for jid in store.accounts.list_accounts(&d).await? {
                        println!("{jid}");
                    }
                }
            }
            UserCommand::Import { common } => {
                let cfg = load(&common)?;
                let store = open_storage(&cfg).await?;
                let mut input = String::new();
                std::io::stdin()
                    .read_to_string(&mut input)
                    .map_err(|e| CliError::Usage(format!("cannot read stdin: {e}")))?;
                let lines: Vec<(usize, &str)> = input
                    .lines()
                    .enumerate()
                    .filter(|(_, l)| !l.trim().is_empty())
                    .collect();
                // Key derivation is the slow part: spread it over the cores.
                let derived = derive_all(&lines, cfg.auth.scram_iterations)?;
                let (mut created, mut existing) = (0usize, 0usize);
                let accounts = limited_accounts(&common, &store).await?;
                for (jid, creds) in derived {
                    match accounts.create_account(&jid, &creds).await {
                        Ok(()) => created += 1,
                        Err(storage::StorageError::AlreadyExists) => existing += 1,
                        Err(e) => return Err(e.into()),
                    }
                }
                println!("imported {created} accounts ({existing} already existed)");
            }
        }
        Ok(())
    })
}

/// Loads the config and storage for a command on one account.
async fn account_op(common: &Common, jid: &str) -> Result<(storage::Storage, BareJid), CliError> {
    let cfg = load(common)?;
    let jid = parse_account(jid)?;
    Ok((open_storage(&cfg).await?, jid))
}

/// The account store with each domain's `max_accounts` enforced.
async fn limited_accounts(
    common: &Common,
    store: &storage::Storage,
) -> Result<Arc<dyn storage::AccountStore>, CliError> {
    let cfg = load(common)?;
    let registry = match cfg.validate() {
        Ok(v) => serve::registry(&v),
        Err(_) => session::Domains::from_names(&cfg.server.domains),
    };
    registry.reload(store.domains.as_ref()).await?;
    Ok(session::LimitedAccounts::new(
        store.accounts.clone(),
        registry,
    ))
}

/// Storage errors a person can act on, in words.
fn friendly(e: storage::StorageError, jid: &BareJid) -> CliError {
    match e {
        storage::StorageError::AlreadyExists => CliError::Usage(format!("{jid} already exists")),
        storage::StorageError::NotFound => CliError::Usage(format!("{jid} does not exist")),
        storage::StorageError::QuotaExceeded => {
            CliError::Usage(format!("the domain of {jid} has reached its account limit"))
        }
        e => e.into(),
    }
}

fn derive_all(
    lines: &[(usize, &str)],
    iterations: u32,
) -> Result<Vec<(BareJid, storage::Credentials)>, CliError> {
    let parsed: Vec<(BareJid, String)> = lines
        .iter()
        .map(|(n, l)| {
            let (jid, pw) = l.trim().split_once(char::is_whitespace).ok_or_else(|| {
                CliError::Usage(format!("line {}: expected `JID PASSWORD`", n + 1))
            })?;
            Ok((parse_account(jid)?, pw.trim().to_owned()))
        })
        .collect::<Result<_, CliError>>()?;
    let threads = std::thread::available_parallelism()
        .map(usize::from)
        .unwrap_or(1);
    let chunk = parsed.len().div_ceil(threads).max(1);
    let parsed = Arc::new(parsed);
    let handles: Vec<_> = (0..parsed.len().div_ceil(chunk))
        .map(|i| {
            let parsed = parsed.clone();
            std::thread::spawn(move || {
                let end = ((i + 1) * chunk).min(parsed.len());
                parsed
                    .get(i * chunk..end)
                    .unwrap_or_default()
                    .iter()
                    .map(|(j, p)| {
                        credentials(p, iterations)
                            .map(|c| (j.clone(), c))
                            .map_err(|e| e.to_string())
                    })
                    .collect::<Result<Vec<_>, String>>()
            })
        })
        .collect();
    let mut out = Vec::with_capacity(parsed.len());
    for h in handles {
        let part = h
            .join()
            .map_err(|_| CliError::Usage("key derivation failed".into()))?
            .map_err(CliError::Usage)?;
        out.extend(part);
    }
    Ok(out)
}
