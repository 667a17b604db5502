//! `relais serve`: wires the roles of this process together.
//!
//! In standalone mode (`all`) the edge talks to the in-process session service, which uses
//! the embedded SQLite store and the local router. The cluster roles carry the same traits
//! over gRPC (not in this build yet).

use std::net::SocketAddr;
use std::sync::Arc;

use edge::{CertStore, EdgeContext, ListenMode, TlsConfigs};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::config::{Config, Role, Validated};
use crate::http::OpsState;
use crate::telemetry::Telemetry;

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(
        "role `{0}` on its own needs the cluster transport, which this build does not have yet; run with --roles all"
    )]
    RoleUnavailable(Role),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Tls(#[from] edge::TlsError),
    #[error("storage: {0}")]
    Storage(#[from] storage::StorageError),
    #[error("cannot create {path}: {source}")]
    DataDir {
        path: String,
        source: std::io::Error,
    },
}

pub async fn serve(cfg: Config, v: Validated, telemetry: Arc<Telemetry>) -> Result<(), ServeError> {
    if let Some(r) = v.roles.iter().find(|r| **r != Role::All) {
        return Err(ServeError::RoleUnavailable(*r));
    }
    let data_dir = cfg.server.data_dir.clone();
    std::fs::create_dir_all(&data_dir).map_err(|source| ServeError::DataDir {
        path: data_dir.display().to_string(),
        source,
    })?;

    let certs = Arc::new(CertStore::default());
    for c in &cfg.tls.certificates {
        certs.insert(&c.domain, edge::tls::load_certified_key(&c.cert, &c.key)?);
    }
    for d in &v.domains {
        if certs.lookup(Some(d)).is_some()
            && cfg.tls.certificates.iter().any(|c| covers(&c.domain, d))
        {
            continue;
        }
        let (src, generated) = edge::tls::ensure_self_signed(&data_dir.join("certs"), d)?;
        if generated {
            tracing::info!(domain = %d, cert = %src.cert.display(), "generated a self-signed certificate");
        }
        certs.insert(d, edge::tls::load_certified_key(&src.cert, &src.key)?);
    }
    let tls = TlsConfigs::new(certs)?;

    let store = storage::sqlite::open(&crate::db_path(&data_dir))?;
    let session_cfg = session::SessionConfig {
        domains: v.domains.clone(),
        offline_quota: cfg.session.offline_quota,
        version_enabled: cfg.session.version_enabled,
        max_resources: cfg.session.max_resources,
        sm_resume_secs: cfg.session.sm_resume_secs,
        ..session::SessionConfig::default()
    };
    let router: Arc<dyn router::Router> = Arc::new(router::LocalRouter);
    let sessions = session::LocalSessionService::new(session_cfg, store.clone(), router);
    let ctx = EdgeContext::new(
        cfg.edge_config(),
        v.domains.clone(),
        tls,
        store.accounts.clone(),
        sessions.clone(),
    );

    let (stop_tx, stop_rx) = watch::channel(false);
    let mut tasks = Vec::new();
    for (addr, mode, name) in [
        (v.c2s, ListenMode::Starttls, "c2s"),
        (v.c2s_tls, ListenMode::DirectTls, "c2s_tls"),
    ] {
        let Some(addr) = addr else { continue };
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| ServeError::Bind { addr, source })?;
        let local = listener.local_addr().unwrap_or(addr);
        // A stable line on stdout, for scripts and tests that listen on port 0.
        println!("relais: {name} listening on {local}");
        tracing::info!(%local, listener = name, "listening");
        let mut stop = stop_rx.clone();
        let ctx = ctx.clone();
        tasks.push(tokio::spawn(async move {
            let shutdown = async move {
                let _ = stop.wait_for(|s| *s).await;
            };
            edge::serve(ctx, listener, mode, shutdown).await;
        }));
    }
    let ops = OpsState::new(telemetry);
    if let Some(addr) = v.ops_http {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| ServeError::Bind { addr, source })?;
        let local = listener.local_addr().unwrap_or(addr);
        println!("relais: http listening on {local}");
        tracing::info!(%local, listener = "http", "listening");
        let mut stop = stop_rx.clone();
        tasks.push(tokio::spawn(crate::http::serve(
            listener,
            ops.clone(),
            async move {
                let _ = stop.wait_for(|s| *s).await;
            },
        )));
    }
    ops.set_ready(true);
    tracing::info!(domains = %v.domains.join(","), "relais is running (standalone)");

    wait_for_signal().await;
    tracing::info!("shutting down: closing streams with system-shutdown");
    ops.set_ready(false);
    let _ = stop_tx.send(true);
    for t in tasks {
        let _ = t.await;
    }
    // XEP-0198 sessions waiting for resumption hold messages only in memory: store them.
    sessions.close_detached().await;
    drop(ctx);
    drop(store);
    tracing::info!("stopped");
    Ok(())
}

fn covers(pattern: &str, domain: &str) -> bool {
    if pattern == domain {
        return true;
    }
    match (pattern.strip_prefix("*."), domain.split_once('.')) {
        (Some(base), Some((_, parent))) => base == parent,
        _ => false,
    }
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
