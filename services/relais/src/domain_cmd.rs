//! `relais domain …`: hosted domains in the storage. The running server (every node of a
//! cluster) picks a change up within `server.domain_poll_secs`; this is what a hosting
//! script runs, next to `relais user`.

use clap::{Args, Subcommand};
use storage::DomainSettings;

use crate::{CliError, Common, load, open_storage};

#[derive(Subcommand, Debug)]
pub enum DomainCommand {
    /// Host a new domain (or host a removed one again).
    Add {
        name: String,
        #[command(flatten)]
        settings: SettingsArgs,
        #[command(flatten)]
        common: Common,
    },
    /// Change a hosted domain's settings (the ones given; `--reset` starts from defaults).
    Update {
        name: String,
        #[command(flatten)]
        settings: SettingsArgs,
        /// Unset every setting not given here (back to the server's defaults).
        #[arg(long)]
        reset: bool,
        #[command(flatten)]
        common: Common,
    },
    /// Stop hosting a domain: its sessions end with <host-gone/>, new streams get
    /// <host-unknown/>. Accounts and their data are kept (see purge).
    Remove {
        name: String,
        #[command(flatten)]
        common: Common,
    },
    /// Delete a removed domain with every account of it and all their data.
    Purge {
        name: String,
        /// Confirms the deletion.
        #[arg(long)]
        yes: bool,
        #[command(flatten)]
        common: Common,
    },
    /// List the configured and stored domains with their settings.
    List {
        #[command(flatten)]
        common: Common,
    },
}

#[derive(Args, Debug, Default, Clone)]
pub struct SettingsArgs {
    /// Offer XEP-0077 in-band registration: true or false.
    #[arg(long)]
    registration_open: Option<bool>,
    /// Days archived messages are kept.
    #[arg(long)]
    archive_retention_days: Option<u32>,
    /// The most accounts of the domain.
    #[arg(long)]
    max_accounts: Option<u32>,
    /// The most bound resources per account.
    #[arg(long)]
    max_sessions_per_account: Option<u32>,
    /// Offline messages kept per account.
    #[arg(long)]
    offline_quota: Option<u32>,
}

impl SettingsArgs {
    fn apply(&self, mut s: DomainSettings) -> Result<DomainSettings, CliError> {
        if self.archive_retention_days == Some(0)
            || self.max_sessions_per_account == Some(0)
            || self.offline_quota == Some(0)
        {
            return Err(CliError::Usage(
                "archive retention, sessions per account and offline quota must be at least 1"
                    .into(),
            ));
        }
        if let Some(v) = self.registration_open {
            s.registration_open = v;
        }
        if self.archive_retention_days.is_some() {
            s.archive_retention_days = self.archive_retention_days;
        }
        if self.max_accounts.is_some() {
            s.max_accounts = self.max_accounts;
        }
        if self.max_sessions_per_account.is_some() {
            s.max_sessions_per_account = self.max_sessions_per_account;
        }
        if self.offline_quota.is_some() {
            s.offline_quota = self.offline_quota;
        }
        Ok(s)
    }
}

fn show(v: Option<u32>) -> String {
    v.map_or_else(|| "-".to_owned(), |n| n.to_string())
}

pub fn run(cmd: DomainCommand) -> Result<(), CliError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError::Usage(format!("cannot start the runtime: {e}")))?;
    rt.block_on(async move {
        use session::domains;
        let common = match &cmd {
            DomainCommand::Add { common, .. }
            | DomainCommand::Update { common, .. }
            | DomainCommand::Remove { common, .. }
            | DomainCommand::Purge { common, .. }
            | DomainCommand::List { common } => common.clone(),
        };
        let cfg = load(&common)?;
        let v = cfg.validate()?;
        let store = open_storage(&cfg).await?;
        let registry = crate::serve::registry(&v);
        registry.reload(store.domains.as_ref()).await?;
        let ds = store.domains.as_ref();
        match cmd {
            DomainCommand::Add { name, settings, .. } => {
                let s = settings.apply(DomainSettings::default())?;
                let r = domains::add_domain(ds, &registry, &name, s).await?;
                println!("added {}", r.domain);
            }
            DomainCommand::Update {
                name,
                settings,
                reset,
                ..
            } => {
                let domain = domains::parse_domain(&name)?;
                let base = if reset {
                    DomainSettings::default()
                } else {
                    registry.settings(&domain).unwrap_or_default()
                };
                let r = domains::update_domain(ds, &registry, &domain, settings.apply(base)?)
                    .await?;
                println!("updated {}", r.domain);
            }
            DomainCommand::Remove { name, .. } => {
                domains::remove_domain(ds, &registry, None, &name).await?;
                println!("removed {} (accounts kept; `relais domain purge` deletes them)", domains::parse_domain(&name)?);
            }
            DomainCommand::Purge { name, yes, .. } => {
                if !yes {
                    return Err(CliError::Usage(
                        "purge deletes every account of the domain and their data: add --yes"
                            .into(),
                    ));
                }
                let n = domains::purge_domain(ds, &registry, &name).await?;
                println!("purged {} ({n} accounts deleted)", domains::parse_domain(&name)?);
            }
            DomainCommand::List { .. } => {
                let stored = domains::list_domains(ds).await?;
                println!("domain\tsource\tstate\tregistration\tretention_days\tmax_accounts\tmax_sessions\toffline_quota");
                let mut rows: Vec<(String, &str, &str, DomainSettings)> = Vec::new();
                for d in &v.domains {
                    if !stored.iter().any(|r| &r.domain == d) {
                        rows.push((d.clone(), "config", "hosted", registry.settings(d).unwrap_or_default()));
                    }
                }
                for r in &stored {
                    let state = if r.removed && !registry.is_static(&r.domain) { "removed" } else { "hosted" };
                    rows.push((r.domain.clone(), "stored", state, r.settings));
                }
                rows.sort_by(|a, b| a.0.cmp(&b.0));
                for (d, source, state, s) in rows {
                    println!(
                        "{d}\t{source}\t{state}\t{}\t{}\t{}\t{}\t{}",
                        if s.registration_open { "open" } else { "closed" },
                        show(s.archive_retention_days),
                        show(s.max_accounts),
                        show(s.max_sessions_per_account),
                        show(s.offline_quota),
                    );
                }
            }
        }
        Ok(())
    })
}
