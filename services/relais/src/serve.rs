//! `relais serve`: wires the roles of this process together.
//!
//! In standalone mode (`all`) the edge talks to the in-process session service, which uses
//! the embedded SQLite store and the local router. The cluster roles (`edge`, `session`,
//! `router`, alone or combined) carry the same traits over gRPC; see `cluster.rs`.

use std::net::SocketAddr;
use std::sync::Arc;

use edge::{CertConfig, CertManager, CertStore, EdgeContext, ListenMode, TlsConfigs};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::config::{ClusterValidated, Config, MembershipSource, PeerRouting, Role, Validated};
use crate::http::OpsState;
use crate::nodes::{
    ClusterAccounts, ClusterSessions, Members, PeerDelivery, PeerMode, PeerRouter,
    PlacementLocality, RelayToOwner, View,
};
use crate::telemetry::Telemetry;

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cluster: {0}")]
    Cluster(cluster::ClusterError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Tls(#[from] edge::TlsError),
    #[error("storage: {0}")]
    Storage(#[from] storage::StorageError),
    #[error("admin: {0}")]
    Admin(#[from] crate::admin::AdminListenError),
    #[error("cannot create {path}: {source}")]
    DataDir {
        path: String,
        source: std::io::Error,
    },
}

pub async fn serve(cfg: Config, v: Validated, telemetry: Arc<Telemetry>) -> Result<(), ServeError> {
    let data_dir = cfg.server.data_dir.clone();
    std::fs::create_dir_all(&data_dir).map_err(|source| ServeError::DataDir {
        path: data_dir.display().to_string(),
        source,
    })?;
    match v.cluster.clone() {
        None => standalone(cfg, v, telemetry).await,
        Some(c) => clustered(cfg, v, c, telemetry).await,
    }
}

/// The hosted domains of this process: the configured ones, with their `[[domain]]`
/// settings. The stored ones are added by a reload (from the storage or a session node).
pub fn registry(v: &Validated) -> Arc<session::Domains> {
    session::Domains::new(v.domains.iter().map(|d| {
        let s = v
            .domain_settings
            .iter()
            .find(|(n, _)| n == d)
            .map(|(_, s)| *s)
            .unwrap_or_default();
        (d.clone(), s)
    }))
}

/// The certificates of every hosted domain now (see `edge::certs`), and the manager that keeps
/// them current.
fn tls_configs(
    cfg: &Config,
    registry: &session::Domains,
) -> Result<(TlsConfigs, CertManager), ServeError> {
    let certs = Arc::new(CertStore::default());
    let mut manager = CertManager::new(
        certs.clone(),
        CertConfig {
            configured: cfg
                .tls
                .certificates
                .iter()
                .map(|c| edge::CertSource {
                    domain: c.domain.clone(),
                    cert: c.cert.clone(),
                    key: c.key.clone(),
                })
                .collect(),
            cert_dir: cfg.tls.cert_dir.clone(),
            self_signed_dir: cfg.server.data_dir.join("certs"),
        },
    )?;
    // Configured domains first (sorted): the first certificate is the default one.
    let snapshot = registry.snapshot();
    let mut names: Vec<&String> = snapshot.hosted.keys().collect();
    names.sort_by_key(|n| (!registry.is_static(n), n.as_str()));
    manager.sync(&names, true)?;
    Ok((TlsConfigs::new(certs)?, manager))
}

/// Keeps the certificates in line with the hosted domains and the files on disk.
fn spawn_certs(
    cfg: &Config,
    manager: CertManager,
    registry: &Arc<session::Domains>,
    stop: &watch::Receiver<bool>,
    tasks: &mut Vec<tokio::task::JoinHandle<()>>,
) {
    let reload = std::time::Duration::from_secs(cfg.tls.reload_secs);
    tasks.push(tokio::spawn(manager.run(
        registry.clone(),
        reload,
        stop.clone(),
    )));
}

/// Reloads the hosted domains from the storage every `server.domain_poll_secs`.
fn spawn_domain_poll(
    cfg: &Config,
    registry: &Arc<session::Domains>,
    store: &storage::Storage,
    stop: &watch::Receiver<bool>,
    tasks: &mut Vec<tokio::task::JoinHandle<()>>,
) {
    tasks.push(tokio::spawn(session::domains::poll_store(
        registry.clone(),
        store.domains.clone(),
        std::time::Duration::from_secs(cfg.server.domain_poll_secs),
        stop.clone(),
    )));
}

fn session_config(cfg: &Config, v: &Validated) -> session::SessionConfig {
    session::SessionConfig {
        domains: v.domains.clone(),
        offline_quota: cfg.session.offline_quota,
        offline_quota_bytes: cfg.session.offline_quota_bytes,
        version_enabled: cfg.session.version_enabled,
        max_resources: cfg.session.max_resources,
        sm_resume_secs: cfg.session.sm_resume_secs,
        durable_sm_queue: cfg.session.durable_sm_queue,
        archive_enabled: cfg.session.archive,
        archive_retention_days: cfg.session.archive_retention_days,
        offline_retention_days: cfg.session.offline_retention_days,
        max_roster_items: cfg.session.max_roster_items,
        ..session::SessionConfig::default()
    }
}

/// Retention: every hour (and once at start), deletes archived and offline messages older
/// than their configured age. On ScyllaDB the rows also carry a TTL; the sweep catches rows
/// written before a retention was set.
fn spawn_retention(
    svc: Arc<session::LocalSessionService>,
    stop: &watch::Receiver<bool>,
    tasks: &mut Vec<tokio::task::JoinHandle<()>>,
) {
    let mut stop = stop.clone();
    tasks.push(tokio::spawn(async move {
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(3600));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.wait_for(|s| *s) => return,
                _ = tick.tick() => {}
            }
            let now = std::time::SystemTime::now();
            match svc.expire_archive(now).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(deleted = n, "archive retention"),
                Err(e) => tracing::warn!(error = %e, "archive retention failed"),
            }
            match svc.expire_offline(now).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(deleted = n, "offline retention"),
                Err(e) => tracing::warn!(error = %e, "offline retention failed"),
            }
        }
    }));
}

fn until(stop: &watch::Receiver<bool>) -> impl std::future::Future<Output = ()> + Send + 'static {
    let mut stop = stop.clone();
    async move {
        let _ = stop.wait_for(|s| *s).await;
    }
}

/// Binds the client listeners and serves them with `ctx` until `stop`.
async fn spawn_client_listeners(
    v: &Validated,
    ctx: &Arc<EdgeContext>,
    stop: &watch::Receiver<bool>,
    tasks: &mut Vec<tokio::task::JoinHandle<()>>,
) -> Result<(), ServeError> {
    for (addr, mode, name) in [
        (v.c2s, ListenMode::Starttls, "c2s"),
        (v.c2s_tls, ListenMode::DirectTls, "c2s_tls"),
    ] {
        let Some(addr) = addr else { continue };
        let listener = bind(addr).await?;
        let local = listener.local_addr().unwrap_or(addr);
        // A stable line on stdout, for scripts and tests that listen on port 0.
        println!("relais: {name} listening on {local}");
        tracing::info!(%local, listener = name, "listening");
        let ctx = ctx.clone();
        let shutdown = until(stop);
        tasks.push(tokio::spawn(async move {
            edge::serve(ctx, listener, mode, shutdown).await;
        }));
    }
    Ok(())
}

async fn bind(addr: SocketAddr) -> Result<TcpListener, ServeError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| ServeError::Bind { addr, source })
}

async fn spawn_ops(
    v: &Validated,
    telemetry: Arc<Telemetry>,
    stop: &watch::Receiver<bool>,
    tasks: &mut Vec<tokio::task::JoinHandle<()>>,
) -> Result<Arc<OpsState>, ServeError> {
    let ops = OpsState::new(telemetry);
    if let Some(addr) = v.ops_http {
        let listener = bind(addr).await?;
        let local = listener.local_addr().unwrap_or(addr);
        println!("relais: http listening on {local}");
        tracing::info!(%local, listener = "http", "listening");
        tasks.push(tokio::spawn(crate::http::serve(
            listener,
            ops.clone(),
            until(stop),
        )));
    }
    Ok(ops)
}

async fn standalone(
    cfg: Config,
    v: Validated,
    telemetry: Arc<Telemetry>,
) -> Result<(), ServeError> {
    let store = crate::store::open(&cfg).await?;
    let domains = registry(&v);
    domains.reload(store.domains.as_ref()).await?;
    let (tls, certs) = tls_configs(&cfg, &domains)?;
    let router: Arc<dyn router::Router> = Arc::new(router::LocalRouter);
    let sessions = session::LocalSessionService::with_registry(
        session_config(&cfg, &v),
        store.clone(),
        router,
        None,
        domains.clone(),
    );
    crate::telemetry::observe_session(&sessions);
    let ctx = EdgeContext::with_registry(
        cfg.edge_config(),
        domains.clone(),
        tls,
        session::LimitedAccounts::new(store.accounts.clone(), domains.clone()),
        sessions.clone(),
    );

    let (stop_tx, stop_rx) = watch::channel(false);
    let mut tasks = Vec::new();
    spawn_retention(sessions.clone(), &stop_rx, &mut tasks);
    spawn_domain_poll(&cfg, &domains, &store, &stop_rx, &mut tasks);
    tasks.push(sessions.follow_domains(stop_rx.clone()));
    spawn_certs(&cfg, certs, &domains, &stop_rx, &mut tasks);
    spawn_client_listeners(&v, &ctx, &stop_rx, &mut tasks).await?;
    let ops = spawn_ops(&v, telemetry, &stop_rx, &mut tasks).await?;
    crate::admin::spawn(
        &cfg,
        &v,
        store.clone(),
        domains.clone(),
        sessions.clone(),
        "standalone",
        &stop_rx,
        &mut tasks,
    )
    .await?;
    ops.set_ready(true);
    println!("relais: ready");
    tracing::info!(
        domains = %v.domains.join(","),
        hosted = domains.snapshot().hosted.len(),
        "relais is running (standalone)"
    );

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

async fn clustered(
    cfg: Config,
    v: Validated,
    c: ClusterValidated,
    telemetry: Arc<Telemetry>,
) -> Result<(), ServeError> {
    let has = |r: Role| v.roles.contains(&r);
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut tasks = Vec::new();

    // The gRPC listener comes first: with port 0, the advertised address is the bound one.
    let grpc = match c.grpc {
        Some(addr) => {
            let listener = bind(addr).await?;
            let local = listener.local_addr().unwrap_or(addr);
            println!("relais: grpc listening on {local}");
            tracing::info!(%local, listener = "grpc", "listening");
            Some((listener, local))
        }
        None => None,
    };
    let advertise = match (&cfg.cluster.advertise, &grpc) {
        (Some(a), _) if !a.trim().is_empty() => a.trim().to_owned(),
        (_, Some((_, local))) => local.to_string(),
        _ => c.advertise.clone(),
    };

    let needs_redis = cfg.cluster.membership == MembershipSource::Redis || has(Role::Session);
    let redis = if needs_redis {
        Some(
            crate::nodes::redis(&cfg.cluster.redis_url)
                .await
                .map_err(ServeError::Cluster)?,
        )
    } else {
        None
    };
    let members = match cfg.cluster.membership {
        MembershipSource::Redis => {
            let Some(client) = &redis else {
                return Err(ServeError::Cluster(cluster::ClusterError::Config(
                    "redis membership without redis".into(),
                )));
            };
            let mut v2 = Vec::new();
            for role in &v.roles {
                let node_role = match role {
                    Role::Edge => cluster::Role::Edge,
                    Role::Session => cluster::Role::Session,
                    Role::Router => cluster::Role::Router,
                    Role::All => continue,
                };
                let me = cluster::Member::new(c.node_id.clone(), node_role, advertise.clone());
                let m = cluster::RedisMembership::start(
                    client.clone(),
                    Some(me),
                    cluster::RedisMembershipConfig {
                        heartbeat: c.heartbeat,
                        ttl: c.ttl,
                        ..cluster::RedisMembershipConfig::default()
                    },
                )
                .await
                .map_err(ServeError::Cluster)?;
                v2.push(m);
            }
            Members::Redis(v2)
        }
        #[cfg(feature = "kube")]
        MembershipSource::Kubernetes => {
            let port = cfg.cluster.kube_port_name.clone();
            let roles = vec![
                cluster::KubeRole {
                    role: cluster::Role::Session,
                    service: cfg.cluster.kube_session_service.clone(),
                    port_name: port.clone(),
                },
                cluster::KubeRole {
                    role: cluster::Role::Router,
                    service: cfg.cluster.kube_router_service.clone(),
                    port_name: port,
                },
            ];
            Members::Kube(
                cluster::KubeMembership::from_env(cfg.cluster.kube_namespace.as_deref(), roles)
                    .await
                    .map_err(ServeError::Cluster)?,
            )
        }
        #[cfg(not(feature = "kube"))]
        MembershipSource::Kubernetes => {
            return Err(ServeError::Cluster(cluster::ClusterError::Config(
                "this build has no kubernetes support (feature `kube`)".into(),
            )));
        }
        MembershipSource::Static => {
            Members::Static(cluster::StaticMembership::new(c.members.clone()))
        }
    };
    let domains = registry(&v);
    let view = View::follow(
        c.node_id.clone(),
        domains.clone(),
        members.watch(),
        c.ttl,
        crate::nodes::cluster_client(c.tls.clone()),
    );

    // Session role: the live state of the accounts placement gives this node.
    let mut session_node = None;
    let mut routes: Option<proto::Routes> = None;
    // Long-lived gRPC streams this node serves end before its server drains.
    let mut stream_closers: Vec<Box<dyn FnOnce() + Send>> = Vec::new();
    if has(Role::Session) {
        let store = crate::store::open(&cfg).await?;
        domains.reload(store.domains.as_ref()).await?;
        spawn_domain_poll(&cfg, &domains, &store, &stop_rx, &mut tasks);
        let mode = match cfg.cluster.peer_routing {
            PeerRouting::Router => PeerMode::ViaRouter,
            PeerRouting::Direct => PeerMode::Direct,
        };
        let peer = PeerRouter::new(view.clone(), mode);
        let svc = session::LocalSessionService::with_registry(
            session_config(&cfg, &v),
            store.clone(),
            peer.clone(),
            Some(Arc::new(PlacementLocality(view.clone()))),
            domains.clone(),
        );
        peer.set_local(&svc);
        crate::telemetry::observe_session(&svc);
        spawn_retention(svc.clone(), &stop_rx, &mut tasks);
        tasks.push(svc.follow_domains(stop_rx.clone()));
        let server = proto::SessionGrpcServer::new(
            svc.clone(),
            session::LimitedAccounts::new(store.accounts.clone(), domains.clone()),
        );
        server.set_domains(store.domains.clone());
        // The admin API: lists and kicks this node's sessions only (see ARCHITECTURE.md, "Operate").
        crate::admin::spawn(
            &cfg,
            &v,
            store.clone(),
            domains.clone(),
            svc.clone(),
            c.node_id.as_str(),
            &stop_rx,
            &mut tasks,
        )
        .await?;
        let delivery = proto::RouterGrpcServer::new(Arc::new(PeerDelivery(svc.clone())));
        routes = Some(delivery.add_to(server.routes()));
        stream_closers.push(Box::new(move || delivery.close_streams()));
        let Some(client) = redis.clone() else {
            return Err(ServeError::Cluster(cluster::ClusterError::Config(
                "the session role needs redis".into(),
            )));
        };
        let mut dcfg = cluster::DirectoryConfig::new(c.node_id.clone());
        dcfg.heartbeat = c.heartbeat;
        dcfg.ttl = c.ttl;
        let directory = Arc::new(
            cluster::RedisDirectory::start(client, dcfg)
                .await
                .map_err(ServeError::Cluster)?,
        );
        let task = tokio::spawn(crate::nodes::run_session_node(
            svc.clone(),
            directory.clone(),
            view.clone(),
            c.heartbeat,
            stop_rx.clone(),
        ));
        session_node = Some((svc, server, directory, task, store));
    }
    if !has(Role::Session) {
        // No storage here: learn the stored domains from a session node.
        tasks.push(tokio::spawn(crate::nodes::poll_domains(
            view.clone(),
            domains.clone(),
            std::time::Duration::from_secs(cfg.server.domain_poll_secs),
            stop_rx.clone(),
        )));
    }
    if has(Role::Router) {
        let relay = proto::RelayGrpcServer::new(RelayToOwner::new(view.clone()));
        routes = Some(relay.routes());
        stream_closers.push(Box::new(move || relay.close_streams()));
    }
    if let (Some((listener, _)), Some(routes)) = (grpc, routes) {
        let shutdown = until(&stop_rx);
        // Mutual TLS when configured (config validation refuses plain gRPC off loopback
        // unless the operator opted out), and HTTP/2 keepalive to notice vanished peers.
        let serve_config = proto::ServeConfig {
            tls: c.tls.clone(),
            ..proto::ServeConfig::default()
        };
        tracing::info!(mtls = serve_config.tls.is_some(), "grpc server");
        tasks.push(tokio::spawn(async move {
            if let Err(e) = proto::serve_with(listener, routes, &serve_config, shutdown).await {
                tracing::error!(error = %e, "grpc server failed");
            }
        }));
    }

    // Edge role: client connections, sessions on their owning nodes.
    let mut edge_ctx = None;
    let mut edge_tasks = Vec::new();
    if has(Role::Edge) {
        let (tls, certs) = tls_configs(&cfg, &domains)?;
        spawn_certs(&cfg, certs, &domains, &stop_rx, &mut tasks);
        let sessions = ClusterSessions::new(view.clone(), c.node_id.as_str().to_owned());
        let mut ecfg = cfg.edge_config();
        ecfg.see_other_host = cfg.cluster.see_other_host.clone().filter(|h| !h.is_empty());
        let ctx = EdgeContext::with_registry(
            ecfg,
            domains.clone(),
            tls,
            Arc::new(ClusterAccounts(sessions.clone())),
            sessions,
        );
        spawn_client_listeners(&v, &ctx, &stop_rx, &mut edge_tasks).await?;
        edge_ctx = Some(ctx);
    }
    let ops = spawn_ops(&v, telemetry, &stop_rx, &mut tasks).await?;
    if has(Role::Edge) {
        // An edge is ready once it knows a session node to send logins to.
        let ops = ops.clone();
        let view = view.clone();
        let mut changes = view.changes();
        let mut stop = stop_rx.clone();
        tasks.push(tokio::spawn(async move {
            loop {
                ops.set_ready(view.has_sessions());
                tokio::select! {
                    _ = stop.wait_for(|s| *s) => return,
                    r = changes.changed() => if r.is_err() { return },
                }
            }
        }));
    } else {
        ops.set_ready(true);
    }
    println!("relais: ready");
    let roles: Vec<String> = v.roles.iter().map(ToString::to_string).collect();
    tracing::info!(node = %c.node_id, roles = %roles.join(","), advertise = %advertise, "relais is running (cluster)");

    wait_for_signal().await;
    tracing::info!("shutting down");
    ops.set_ready(false);
    // Others stop routing here first.
    members.leave().await;
    if let Some((_, server, _, _, _)) = &session_node {
        server.close_streams();
    }
    for close in stream_closers {
        close();
    }
    let _ = stop_tx.send(true);
    // The edge drains its clients (see-other-host or system-shutdown) while the session
    // role's links are still up.
    for t in edge_tasks {
        let _ = t.await;
    }
    for t in tasks {
        let _ = t.await;
    }
    drop(edge_ctx);
    if let Some((svc, _server, directory, task, store)) = session_node {
        svc.close_detached().await;
        let _ = task.await;
        if let Err(e) = directory.retire().await {
            tracing::warn!(error = %e, "cannot retire from the directory");
        }
        drop(store);
    }
    tracing::info!("stopped");
    Ok(())
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
