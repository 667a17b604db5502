//! `relais admin …`: the admin API from the command line, over gRPC (`GrpcAdminClient`).
//!
//! Exit codes: 0 success, 1 a server-side failure (internal, unsupported), 2 bad arguments
//! (here or as the server judged them), 3 the server cannot be reached, 4 the token was
//! refused (or none was given), 5 the token's scope does not allow it, 6 not found,
//! 7 already exists or refused in the current state (a limit reached).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

use ::admin::{
    AdminError, AdminService, DomainSettings, ErrorCode, KickCondition, KickTarget, SessionFilter,
};
use clap::{Args, Subcommand};

#[derive(Args, Debug)]
pub struct AdminArgs {
    /// The admin API's address (`[admin] listen`).
    #[arg(
        long,
        env = "RELAIS_ADMIN_URL",
        default_value = "http://127.0.0.1:5280",
        global = true
    )]
    url: String,
    /// A file holding the token (otherwise RELAIS_ADMIN_TOKEN).
    #[arg(long, global = true)]
    token_file: Option<PathBuf>,
    #[command(subcommand)]
    command: AdminCommand,
}

#[derive(Subcommand, Debug)]
enum AdminCommand {
    /// Hosted domains.
    #[command(subcommand)]
    Domain(DomainCommand),
    /// Accounts.
    #[command(subcommand)]
    Account(AccountCommand),
    /// Live sessions.
    #[command(subcommand)]
    Session(SessionCommand),
    /// Figures of one domain.
    Stats { domain: String },
    /// Generate a random token and print it with the SHA-256 the config wants.
    Token {
        /// The scope to print in the config snippet: `global` or a domain.
        #[arg(long, default_value = "global")]
        scope: String,
    },
}

#[derive(Args, Debug, Default)]
struct SettingsArgs {
    /// Open in-band registration: true or false.
    #[arg(long)]
    registration_open: Option<bool>,
    /// Days archived messages are kept, or `default`.
    #[arg(long)]
    archive_retention_days: Option<String>,
    /// The most accounts, or `none`.
    #[arg(long)]
    max_accounts: Option<String>,
    /// The most resources per account, or `default`.
    #[arg(long)]
    max_sessions_per_account: Option<String>,
    /// Offline messages kept per account, or `default`.
    #[arg(long)]
    offline_quota: Option<String>,
}

#[derive(Subcommand, Debug)]
enum DomainCommand {
    /// List the domains (a domain token sees its own).
    List,
    /// Host a new domain.
    Add {
        domain: String,
        #[command(flatten)]
        settings: SettingsArgs,
    },
    /// Change a domain's settings (the ones given; the others stay).
    Update {
        domain: String,
        #[command(flatten)]
        settings: SettingsArgs,
    },
    /// Stop hosting a domain; its accounts are kept.
    Remove { domain: String },
    /// Stop hosting a domain and delete all its accounts and their data.
    Purge {
        domain: String,
        /// Confirm the deletion.
        #[arg(long)]
        yes: bool,
    },
}

#[derive(Subcommand, Debug)]
enum AccountCommand {
    /// List the accounts of a domain.
    List { domain: String },
    /// Create an account (the password is read from a prompt or standard input).
    Add {
        jid: String,
        #[arg(long)]
        password_stdin: bool,
    },
    /// Change a password.
    Passwd {
        jid: String,
        #[arg(long)]
        password_stdin: bool,
    },
    /// Delete an account and all its data; its sessions end.
    Remove { jid: String },
}

#[derive(Subcommand, Debug)]
enum SessionCommand {
    /// List the sessions of a domain, or of one account with --account.
    List {
        domain: Option<String>,
        #[arg(long, conflicts_with = "domain")]
        account: Option<String>,
    },
    /// End a session (full JID) or every session of an account (bare JID).
    Kick {
        jid: String,
        /// policy-violation (default), not-authorized, system-shutdown or reset.
        #[arg(long, default_value = "policy-violation")]
        condition: String,
    },
}

/// A failure with its exit code.
struct Failure {
    code: u8,
    message: String,
}

impl Failure {
    fn usage(message: impl Into<String>) -> Failure {
        Failure {
            code: 2,
            message: message.into(),
        }
    }
}

pub fn run(args: AdminArgs) -> ExitCode {
    match run_inner(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            eprintln!("relais admin: {}", f.message);
            ExitCode::from(f.code)
        }
    }
}

fn run_inner(args: AdminArgs) -> Result<(), Failure> {
    if let AdminCommand::Token { scope } = &args.command {
        let scope = ::admin::Scope::parse(scope).map_err(|e| Failure::usage(e.to_string()))?;
        let token = ::admin::auth::generate_token();
        println!("token:  {token}");
        println!("sha256: {}", ::admin::auth::token_sha256_hex(&token));
        println!();
        println!("# in the config (the token itself is not stored there):");
        println!("[[admin.tokens]]");
        println!("sha256 = \"{}\"", ::admin::auth::token_sha256_hex(&token));
        println!("scope = \"{scope}\"");
        return Ok(());
    }
    let token = token(&args)?;
    if !(args.url.starts_with("http://") || args.url.starts_with("https://")) {
        return Err(Failure::usage(format!(
            "--url `{}` must start with http://",
            args.url
        )));
    }
    if args.url.starts_with("https://") {
        return Err(Failure::usage(
            "this client speaks plain http:// only; reach a TLS admin port through its HTTP/JSON mapping (curl --cert) or a local tunnel",
        ));
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure {
            code: 1,
            message: format!("cannot start the runtime: {e}"),
        })?;
    let url = args.url.clone();
    let had_token = token.is_some();
    rt.block_on(async {
        // The channel spawns its worker, so it is made inside the runtime.
        let client = proto::GrpcAdminClient::connect_lazy(url.clone(), token.as_deref())
            .map_err(|e| Failure::usage(e.to_string()))?;
        command(&client, args.command)
            .await
            .map_err(|e| failure(e, &url, had_token))
    })
}

fn token(args: &AdminArgs) -> Result<Option<String>, Failure> {
    if let Some(path) = &args.token_file {
        let text = std::fs::read_to_string(path).map_err(|e| {
            Failure::usage(format!(
                "cannot read the token file {}: {e}",
                path.display()
            ))
        })?;
        let t = text.trim().to_owned();
        if t.is_empty() {
            return Err(Failure::usage(format!(
                "the token file {} is empty",
                path.display()
            )));
        }
        return Ok(Some(t));
    }
    Ok(std::env::var("RELAIS_ADMIN_TOKEN")
        .ok()
        .map(|t| t.trim().to_owned())
        .filter(|t| !t.is_empty()))
}

fn failure(e: AdminError, url: &str, had_token: bool) -> Failure {
    let (code, message) = match e.code() {
        ErrorCode::InvalidArgument => (2, e.to_string()),
        ErrorCode::Unavailable => (
            3,
            format!("cannot reach the admin API at {url}: {}", e.message()),
        ),
        ErrorCode::Unauthenticated if !had_token => (
            4,
            format!(
                "not authenticated ({}); give a token with --token-file or RELAIS_ADMIN_TOKEN",
                e.message()
            ),
        ),
        ErrorCode::Unauthenticated => (4, format!("the server refused the token: {}", e.message())),
        ErrorCode::PermissionDenied => (5, format!("forbidden: {}", e.message())),
        ErrorCode::NotFound => (6, e.to_string()),
        ErrorCode::AlreadyExists | ErrorCode::FailedPrecondition => (7, e.to_string()),
        ErrorCode::Unsupported | ErrorCode::Internal => (1, e.to_string()),
    };
    Failure { code, message }
}

fn bad(m: String) -> AdminError {
    AdminError::InvalidArgument(m)
}

/// `N`, or one of `clear` words (`none`, `default`) for "unset".
fn limit<T: std::str::FromStr>(name: &str, v: &str) -> Result<Option<T>, AdminError> {
    match v.trim() {
        "none" | "default" | "unlimited" => Ok(None),
        n => n.parse().map(Some).map_err(|_| {
            bad(format!(
                "--{name}: `{n}` is not a number (or `default`/`none`)"
            ))
        }),
    }
}

impl SettingsArgs {
    fn apply(&self, s: &mut DomainSettings) -> Result<(), AdminError> {
        if let Some(r) = self.registration_open {
            s.registration_open = r;
        }
        if let Some(v) = &self.archive_retention_days {
            s.archive_retention_days = limit("archive-retention-days", v)?;
        }
        if let Some(v) = &self.max_accounts {
            s.max_accounts = limit("max-accounts", v)?;
        }
        if let Some(v) = &self.max_sessions_per_account {
            s.max_sessions_per_account = limit("max-sessions-per-account", v)?;
        }
        if let Some(v) = &self.offline_quota {
            s.offline_quota = limit("offline-quota", v)?;
        }
        Ok(())
    }
}

fn print_settings(d: &::admin::DomainInfo) {
    let s = &d.settings;
    let opt = |v: Option<u64>, unset: &str| v.map_or(unset.to_owned(), |n| n.to_string());
    println!(
        "{}\tregistration={}\tarchive_retention_days={}\tmax_accounts={}\tmax_sessions_per_account={}\toffline_quota={}",
        d.name,
        if s.registration_open {
            "open"
        } else {
            "closed"
        },
        opt(s.archive_retention_days.map(u64::from), "default"),
        opt(s.max_accounts, "none"),
        opt(s.max_sessions_per_account.map(u64::from), "default"),
        opt(s.offline_quota.map(u64::from), "default"),
    );
}

fn age(since_ms: u64) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0);
    let secs = now.saturating_sub(u128::from(since_ms)) / 1000;
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s if s < 172_800 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    }
}

fn read_password(from_stdin: bool) -> Result<String, AdminError> {
    crate::read_password(from_stdin).map_err(|e| bad(e.to_string()))
}

async fn command(client: &dyn AdminService, cmd: AdminCommand) -> Result<(), AdminError> {
    match cmd {
        AdminCommand::Domain(DomainCommand::List) => {
            for d in client.list_domains().await? {
                print_settings(&d);
            }
        }
        AdminCommand::Domain(DomainCommand::Add { domain, settings }) => {
            let mut s = DomainSettings::default();
            settings.apply(&mut s)?;
            let d = client.add_domain(&domain, s).await?;
            print_settings(&d);
        }
        AdminCommand::Domain(DomainCommand::Update { domain, settings }) => {
            let mut s = client.get_domain(&domain).await?.settings;
            settings.apply(&mut s)?;
            let d = client.update_domain(&domain, s).await?;
            print_settings(&d);
        }
        AdminCommand::Domain(DomainCommand::Remove { domain }) => {
            client.remove_domain(&domain).await?;
            println!("removed {domain} (its accounts are kept; `purge` deletes them)");
        }
        AdminCommand::Domain(DomainCommand::Purge { domain, yes }) => {
            if !yes {
                return Err(bad(format!(
                    "purging deletes every account of {domain} and all their data; add --yes to confirm"
                )));
            }
            client.purge_domain(&domain).await?;
            println!("purged {domain}");
        }
        AdminCommand::Account(AccountCommand::List { domain }) => {
            for j in client.list_accounts(&domain).await? {
                println!("{j}");
            }
        }
        AdminCommand::Account(AccountCommand::Add {
            jid,
            password_stdin,
        }) => {
            let jid = ::admin::parse_account(&jid)?;
            let pw = read_password(password_stdin)?;
            client.add_account(&jid, &pw).await?;
            println!("created {jid}");
        }
        AdminCommand::Account(AccountCommand::Passwd {
            jid,
            password_stdin,
        }) => {
            let jid = ::admin::parse_account(&jid)?;
            let pw = read_password(password_stdin)?;
            client.set_password(&jid, &pw).await?;
            println!("password changed for {jid}");
        }
        AdminCommand::Account(AccountCommand::Remove { jid }) => {
            let jid = ::admin::parse_account(&jid)?;
            client.remove_account(&jid).await?;
            println!("removed {jid}");
        }
        AdminCommand::Session(SessionCommand::List { domain, account }) => {
            let filter = match (domain, account) {
                (_, Some(a)) => SessionFilter::Account(::admin::parse_account(&a)?),
                (Some(d), None) => SessionFilter::Domain(d),
                (None, None) => return Err(bad("give a domain, or --account JID".into())),
            };
            for s in client.list_sessions(&filter).await? {
                println!(
                    "{}\tnode={}\tconnection={}\tpriority={}\t{}\tsince={}",
                    s.jid,
                    s.node,
                    s.connection.as_deref().unwrap_or("local"),
                    s.priority,
                    if s.available {
                        "available"
                    } else {
                        "unavailable"
                    },
                    age(s.since_ms),
                );
            }
        }
        AdminCommand::Session(SessionCommand::Kick { jid, condition }) => {
            let target = KickTarget::parse(&jid)?;
            let condition = KickCondition::parse(&condition)?;
            let n = client.kick(&target, condition).await?;
            println!(
                "kicked {n} session{} of {target} with <{}/>",
                if n == 1 { "" } else { "s" },
                condition.as_str()
            );
        }
        AdminCommand::Stats { domain } => {
            let s = client.domain_stats(&domain).await?;
            println!("domain\t{}", s.domain);
            println!("accounts\t{}", s.accounts);
            println!("online_accounts\t{}", s.online_accounts);
            println!("sessions\t{}", s.sessions);
            match s.messages_routed {
                Some(n) => println!("messages_routed\t{n}"),
                None => println!("messages_routed\tnot counted"),
            }
        }
        AdminCommand::Token { .. } => {}
    }
    Ok(())
}
