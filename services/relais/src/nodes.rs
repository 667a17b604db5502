//! The clustered roles' plumbing: membership, placement, the edge's session client that
//! picks the owning session node per account, the session node's peer routing and directory
//! publishing, and the router's relay.
//!
//! Placement is the only routing table: every node computes the owner of a bare JID from the
//! same member list (rendezvous hashing), so no lookup sits on a message's path. The Redis
//! directory records where each resource is bound (for operators, liveness and the janitor),
//! and is rebuilt from the live sessions when Redis loses it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError, RwLock, Weak};
use std::time::Duration;

use async_trait::async_trait;
use cluster::{
    Directory, DirectoryEntry, Member, MemberSet, Membership, NodeId, Placement, RedisClient,
    RedisDirectory, Role as NodeRole,
};
use proto::{ClientConfig, GrpcRouter, GrpcSessionClient, RelayTargets};
use router::{RouteError, Router};
use session::{
    ClientSink, LiveResource, LocalSessionService, Locality, SessionError, SessionService,
    SessionToken, SmEnabled, SmResumed,
};
use storage::{AccountStore, Credentials, StorageError};
use tokio::sync::watch;
use tracing::Instrument;
use xmpp::{BareJid, Element, FullJid, Jid};

/// How many nodes a stanza is offered to before it is bounced (the owner, then the nodes that
/// would own the recipient if the previous ones were gone).
const MAX_CANDIDATES: usize = 3;

/// This node's view of the cluster, kept current from a membership watch.
pub struct View {
    me: NodeId,
    domains: Arc<session::Domains>,
    sessions: RwLock<Arc<Placement>>,
    routers: RwLock<Arc<Placement>>,
    /// Bumped after each change, for tasks that react to membership changes.
    changes: watch::Sender<u64>,
    /// How every cluster gRPC client of this node dials (mutual TLS, keepalive).
    client: ClientConfig,
}

/// The settings of this node's cluster gRPC clients: mutual TLS when configured, and an
/// HTTP/2 keepalive that notices a partitioned peer within seconds.
pub fn cluster_client(tls: Option<proto::ClusterTls>) -> ClientConfig {
    ClientConfig {
        connect_timeout: Duration::from_secs(2),
        keepalive_interval: Duration::from_secs(5),
        keepalive_timeout: Duration::from_secs(5),
        tls,
        ..ClientConfig::default()
    }
}

impl View {
    /// Follows `members` until the membership source is dropped. A change that removes a
    /// session node takes effect only if it still holds after `grace`: a Redis restart (every
    /// node heartbeats again within one period) or a brief partition must not move accounts.
    pub fn follow(
        me: NodeId,
        domains: Arc<session::Domains>,
        mut members: watch::Receiver<MemberSet>,
        grace: Duration,
        client: ClientConfig,
    ) -> Arc<Self> {
        let view = Arc::new(View {
            me,
            domains,
            sessions: RwLock::new(Arc::new(Placement::new([]))),
            routers: RwLock::new(Arc::new(Placement::new([]))),
            changes: watch::Sender::new(0),
            client,
        });
        view.set(&members.borrow_and_update());
        let weak = Arc::downgrade(&view);
        tokio::spawn(async move {
            while members.changed().await.is_ok() {
                let Some(view) = weak.upgrade() else { return };
                let set = members.borrow_and_update().clone();
                let current = view.sessions();
                let removes = current
                    .members()
                    .any(|m| !set.role(NodeRole::Session).contains(m));
                if removes {
                    drop(view);
                    tokio::time::sleep(grace).await;
                    let Some(view) = weak.upgrade() else { return };
                    let latest = members.borrow_and_update().clone();
                    view.set(&latest);
                } else {
                    view.set(&set);
                }
            }
        });
        view
    }

    fn set(&self, set: &MemberSet) {
        let sessions = Placement::new(set.role(NodeRole::Session).iter().cloned());
        let routers = Placement::new(set.role(NodeRole::Router).iter().cloned());
        let same = |a: &Placement, b: &Placement| a.members().eq(b.members());
        if same(&sessions, &self.sessions()) && same(&routers, &self.routers()) {
            return;
        }
        tracing::info!(
            sessions = sessions.len(),
            routers = routers.len(),
            "cluster membership changed"
        );
        *self
            .sessions
            .write()
            .unwrap_or_else(PoisonError::into_inner) = Arc::new(sessions);
        *self.routers.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(routers);
        self.changes.send_modify(|n| *n += 1);
    }

    fn sessions(&self) -> Arc<Placement> {
        Arc::clone(&self.sessions.read().unwrap_or_else(PoisonError::into_inner))
    }

    fn routers(&self) -> Arc<Placement> {
        Arc::clone(&self.routers.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// Whether any session node is known.
    pub fn has_sessions(&self) -> bool {
        !self.sessions().is_empty()
    }

    pub fn changes(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    fn is_hosted(&self, domain: &str) -> bool {
        self.domains.contains(domain)
    }

    /// The owning session node of `account`.
    pub fn owner(&self, account: &BareJid) -> Option<Member> {
        self.sessions().owner(account).cloned()
    }

    /// The owner of `key` in `placement`, then the owners if the previous ones were gone.
    fn ranked(placement: &Placement, key: &[u8], n: usize) -> Vec<Member> {
        placement.ranked(key, n).into_iter().cloned().collect()
    }

    fn session_candidates(&self, account: &BareJid) -> Vec<Member> {
        Self::ranked(
            &self.sessions(),
            account.as_str().as_bytes(),
            MAX_CANDIDATES,
        )
    }
}

/// Session nodes own the accounts placement gives them.
pub struct PlacementLocality(pub Arc<View>);

impl Locality for PlacementLocality {
    fn is_local(&self, account: &BareJid) -> bool {
        // Before any session member is known (start-up), this node takes everything.
        self.0.owner(account).is_none_or(|m| m.id == self.0.me)
    }
}

/// gRPC router clients by address, created on first use.
#[derive(Default)]
struct RouterClients(Mutex<HashMap<String, GrpcRouter>>);

impl RouterClients {
    fn get(&self, addr: &str, config: &ClientConfig) -> Result<GrpcRouter, RouteError> {
        let mut map = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(c) = map.get(addr) {
            return Ok(c.clone());
        }
        let c = GrpcRouter::connect_lazy_with(format!("http://{addr}"), config)
            .map_err(|e| RouteError::Unavailable(e.to_string()))?;
        map.insert(addr.to_owned(), c.clone());
        Ok(c)
    }
}

/// How a session node sends a stanza to the owner of its recipient.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PeerMode {
    /// session → router → session.
    ViaRouter,
    /// session → session.
    Direct,
}

/// The session node's [`Router`]: stanzas for accounts owned by other session nodes, and for
/// other servers.
pub struct PeerRouter {
    view: Arc<View>,
    mode: PeerMode,
    clients: RouterClients,
    local: OnceLock<Weak<LocalSessionService>>,
}

impl PeerRouter {
    pub fn new(view: Arc<View>, mode: PeerMode) -> Arc<Self> {
        Arc::new(PeerRouter {
            view,
            mode,
            clients: RouterClients::default(),
            local: OnceLock::new(),
        })
    }

    /// The service of this node, for stanzas that placement sends back here.
    pub fn set_local(&self, svc: &Arc<LocalSessionService>) {
        let _ = self.local.set(Arc::downgrade(svc));
    }

    async fn via_router(&self, st: &Element, key: &[u8]) -> Option<Result<(), RouteError>> {
        let routers = View::ranked(&self.view.routers(), key, 2);
        for r in routers {
            let client = match self.clients.get(&r.addr, &self.view.client) {
                Ok(c) => c,
                Err(e) => return Some(Err(e)),
            };
            match client.route(st.clone()).await {
                Err(RouteError::Unavailable(e)) => {
                    tracing::warn!(router = %r.id, error = %e, "router unreachable; trying the next");
                }
                other => return Some(other),
            }
        }
        None
    }

    async fn direct(&self, st: Element, account: &BareJid) -> Result<(), RouteError> {
        let mut last = RouteError::Unavailable("no session node is known".to_owned());
        for m in self.view.session_candidates(account) {
            if m.id == self.view.me {
                let Some(svc) = self.local.get().and_then(Weak::upgrade) else {
                    return Err(RouteError::Unavailable(
                        "session service stopped".to_owned(),
                    ));
                };
                return svc
                    .deliver_from_peer(st)
                    .await
                    .map_err(|e| RouteError::Unavailable(e.to_string()));
            }
            let client = self.clients.get(&m.addr, &self.view.client)?;
            match client.route(st.clone()).await {
                Err(RouteError::Unavailable(e)) => {
                    tracing::warn!(node = %m.id, error = %e, "session node unreachable; trying the next owner");
                    last = RouteError::Unavailable(e);
                }
                other => return other,
            }
        }
        Err(last)
    }
}

impl PeerMode {
    fn as_str(self) -> &'static str {
        match self {
            PeerMode::ViaRouter => "via_router",
            PeerMode::Direct => "direct",
        }
    }
}

#[async_trait]
impl Router for PeerRouter {
    async fn route(&self, st: Element) -> Result<(), RouteError> {
        // One span per stanza leaving this node; the gRPC client carries it to the next hop.
        let span = tracing::info_span!(
            target: session::TRACE_TARGET,
            "router.relay",
            "stanza.kind" = st.name(),
            "stanza.type" = st.get_attr("type"),
            mode = self.mode.as_str(),
        );
        self.route_to_owner(st).instrument(span).await
    }
}

impl PeerRouter {
    async fn route_to_owner(&self, st: Element) -> Result<(), RouteError> {
        let Some(to) = st.get_attr("to").and_then(|t| t.parse::<Jid>().ok()) else {
            return Err(RouteError::NoRoute(String::new()));
        };
        let bare = to.bare();
        if self.mode == PeerMode::ViaRouter
            && let Some(res) = self.via_router(&st, bare.as_str().as_bytes()).await
        {
            return res;
        }
        if !self.view.is_hosted(to.domain()) {
            // Federation (s2s) belongs to the router role and is not built yet.
            return Err(RouteError::NoRoute(to.domain().to_owned()));
        }
        self.direct(st, &bare).await
    }
}

/// What a session node's `relais.router.v1` endpoint does with a stanza another node sent:
/// delivers it here, whatever this node's view of placement says.
pub struct PeerDelivery(pub Arc<LocalSessionService>);

#[async_trait]
impl Router for PeerDelivery {
    async fn route(&self, st: Element) -> Result<(), RouteError> {
        self.0
            .deliver_from_peer(st)
            .await
            .map_err(|e| RouteError::Unavailable(e.to_string()))
    }
}

/// The router role: relays each stanza to the session node that owns its recipient.
pub struct RelayToOwner {
    view: Arc<View>,
    clients: RouterClients,
}

impl RelayToOwner {
    pub fn new(view: Arc<View>) -> Arc<Self> {
        Arc::new(RelayToOwner {
            view,
            clients: RouterClients::default(),
        })
    }
}

impl RelayTargets for RelayToOwner {
    fn targets(&self, to: &str) -> Result<Vec<GrpcRouter>, RouteError> {
        let jid = to
            .parse::<Jid>()
            .map_err(|_| RouteError::NoRoute(String::new()))?;
        if !self.view.is_hosted(jid.domain()) {
            return Err(RouteError::NoRoute(jid.domain().to_owned()));
        }
        let candidates = self.view.session_candidates(&jid.bare());
        if candidates.is_empty() {
            return Err(RouteError::Unavailable(
                "no session node is known".to_owned(),
            ));
        }
        candidates
            .iter()
            .map(|m| self.clients.get(&m.addr, &self.view.client))
            .collect()
    }
}

/// The edge's [`SessionService`]: each account's session lives on its owning session node,
/// reached over one multiplexed `Attach` stream per node.
pub struct ClusterSessions {
    view: Arc<View>,
    edge_id: String,
    config: ClientConfig,
    nodes: tokio::sync::Mutex<HashMap<NodeId, (String, GrpcSessionClient)>>,
    conns: Mutex<HashMap<u64, (GrpcSessionClient, SessionToken)>>,
    next: AtomicU64,
}

impl ClusterSessions {
    pub fn new(view: Arc<View>, edge_id: String) -> Arc<Self> {
        let config = ClientConfig {
            answer_timeout: Duration::from_secs(5),
            reconnect_attempts: 5,
            backoff_initial: Duration::from_millis(100),
            backoff_max: Duration::from_secs(2),
            connect_timeout: Duration::from_secs(2),
            keepalive_interval: Duration::from_secs(5),
            keepalive_timeout: Duration::from_secs(5),
            tls: view.client.tls.clone(),
            ..ClientConfig::default()
        };
        Arc::new(ClusterSessions {
            view,
            edge_id,
            config,
            nodes: tokio::sync::Mutex::new(HashMap::new()),
            conns: Mutex::new(HashMap::new()),
            next: AtomicU64::new(1),
        })
    }

    fn conns(&self) -> std::sync::MutexGuard<'_, HashMap<u64, (GrpcSessionClient, SessionToken)>> {
        self.conns.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The client of the node that owns `account`, connecting if needed.
    async fn client_for(&self, account: &BareJid) -> Result<GrpcSessionClient, SessionError> {
        let Some(m) = self.view.owner(account) else {
            return Err(SessionError::Unavailable(
                "no session node is known".to_owned(),
            ));
        };
        let mut nodes = self.nodes.lock().await;
        if let Some((addr, c)) = nodes.get(&m.id)
            && *addr == m.addr
            && !c.is_dead()
        {
            return Ok(c.clone());
        }
        let c = GrpcSessionClient::connect_with(
            format!("http://{}", m.addr),
            self.edge_id.clone(),
            self.config.clone(),
        )
        .await
        .map_err(|e| SessionError::Unavailable(e.to_string()))?;
        tracing::info!(node = %m.id, addr = %m.addr, "attached to a session node");
        nodes.insert(m.id.clone(), (m.addr.clone(), c.clone()));
        Ok(c)
    }

    fn remote(
        &self,
        token: SessionToken,
    ) -> Result<(GrpcSessionClient, SessionToken), SessionError> {
        self.conns()
            .get(&token.0)
            .cloned()
            .ok_or(SessionError::NoSession)
    }

    fn register(&self, client: GrpcSessionClient, remote: SessionToken) -> SessionToken {
        let local = self.next.fetch_add(1, Ordering::Relaxed);
        self.conns().insert(local, (client, remote));
        SessionToken(local)
    }
}

#[async_trait]
impl SessionService for ClusterSessions {
    async fn open(
        &self,
        jid: FullJid,
        sink: Arc<dyn ClientSink>,
    ) -> Result<SessionToken, SessionError> {
        let bare = jid.bare();
        let mut changes = self.view.changes();
        let client = self.client_for(&bare).await?;
        match client.open(jid.clone(), Arc::clone(&sink)).await {
            Ok(remote) => Ok(self.register(client, remote)),
            Err(SessionError::Unavailable(why)) if why == session::NOT_OWNER => {
                // The node knows of a membership change this edge has not seen yet: wait for
                // it (a heartbeat or two), then ask the new owner.
                let _ = tokio::time::timeout(self.config.answer_timeout, changes.changed()).await;
                let client = self.client_for(&bare).await?;
                let remote = client.open(jid, sink).await?;
                Ok(self.register(client, remote))
            }
            Err(e) => Err(e),
        }
    }

    async fn stanza(
        &self,
        jid: &FullJid,
        token: SessionToken,
        stanza: Element,
    ) -> Result<(), SessionError> {
        let (client, remote) = self.remote(token)?;
        client.stanza(jid, remote, stanza).await
    }

    async fn close(&self, jid: &FullJid, token: SessionToken) {
        let removed = self.conns().remove(&token.0);
        if let Some((client, remote)) = removed {
            client.close(jid, remote).await;
        }
    }

    async fn enable_sm(
        &self,
        jid: &FullJid,
        token: SessionToken,
        resume: bool,
    ) -> Result<SmEnabled, SessionError> {
        let (client, remote) = self.remote(token)?;
        client.enable_sm(jid, remote, resume).await
    }

    async fn sm_ack(&self, jid: &FullJid, token: SessionToken, h: u32) -> Result<(), SessionError> {
        let (client, remote) = self.remote(token)?;
        client.sm_ack(jid, remote, h).await
    }

    async fn sm_received(&self, jid: &FullJid, token: SessionToken) -> Result<u32, SessionError> {
        let (client, remote) = self.remote(token)?;
        client.sm_received(jid, remote).await
    }

    async fn detach(&self, jid: &FullJid, token: SessionToken) {
        let removed = self.conns().remove(&token.0);
        if let Some((client, remote)) = removed {
            client.detach(jid, remote).await;
        }
    }

    async fn sm_resume(
        &self,
        account: &BareJid,
        id: &str,
        h: u32,
        sink: Arc<dyn ClientSink>,
    ) -> Result<SmResumed, SessionError> {
        // The resumption id names the account, and the account names its node.
        let client = self.client_for(account).await?;
        let r = client.sm_resume(account, id, h, sink).await?;
        let token = self.register(client, r.token);
        Ok(SmResumed { token, ..r })
    }
}

/// The edge's account store: credentials come from the owning session node (SCRAM runs on
/// the edge with one lookup per login). The only write is in-band registration, which the
/// owning session node performs.
pub struct ClusterAccounts(pub Arc<ClusterSessions>);

fn read_only() -> StorageError {
    StorageError::Unavailable("an edge cannot change accounts".to_owned())
}

#[async_trait]
impl AccountStore for ClusterAccounts {
    /// XEP-0077 registration: the owning session node creates it (and enforces the
    /// domain's account limit).
    async fn create_account(&self, jid: &BareJid, creds: &Credentials) -> storage::Result<()> {
        let client = self
            .0
            .client_for(jid)
            .await
            .map_err(|e| StorageError::Unavailable(e.to_string()))?;
        client.credentials().create_account(jid, creds).await
    }
    async fn set_credentials(&self, _jid: &BareJid, _creds: &Credentials) -> storage::Result<()> {
        Err(read_only())
    }
    async fn get_credentials(&self, jid: &BareJid) -> storage::Result<Option<Credentials>> {
        let client = self
            .0
            .client_for(jid)
            .await
            .map_err(|e| StorageError::Unavailable(e.to_string()))?;
        client.credentials().get_credentials(jid).await
    }
    async fn delete_account(&self, _jid: &BareJid) -> storage::Result<()> {
        Err(read_only())
    }
    async fn list_accounts(&self, _domain: &str) -> storage::Result<Vec<BareJid>> {
        Err(read_only())
    }
    async fn account_exists(&self, jid: &BareJid) -> storage::Result<bool> {
        Ok(self.get_credentials(jid).await?.is_some())
    }
}

/// Starts the membership source of this node: Redis heartbeats as each of `roles`, the
/// Kubernetes EndpointSlices, or a static list.
pub enum Members {
    Redis(Vec<cluster::RedisMembership>),
    #[cfg(feature = "kube")]
    Kube(cluster::KubeMembership),
    Static(cluster::StaticMembership),
}

impl Members {
    pub fn watch(&self) -> watch::Receiver<MemberSet> {
        match self {
            Members::Redis(v) => match v.first() {
                Some(m) => m.watch(),
                None => watch::channel(MemberSet::default()).1,
            },
            #[cfg(feature = "kube")]
            Members::Kube(k) => k.watch(),
            Members::Static(s) => s.watch(),
        }
    }

    /// Leaves the membership now (Redis), so others stop routing here before the TTL.
    pub async fn leave(&self) {
        if let Members::Redis(v) = self {
            for m in v {
                if let Err(e) = m.leave().await {
                    tracing::warn!(error = %e, "cannot leave the membership");
                }
            }
        }
    }
}

/// Publishes this session node's live resources to the directory, sweeps dead nodes (their
/// users' contacts get unavailable presence), republishes after Redis lost the directory, and
/// ends the sessions this node no longer owns after a membership change. Runs until `stop`.
pub async fn run_session_node(
    svc: Arc<LocalSessionService>,
    directory: Arc<RedisDirectory>,
    view: Arc<View>,
    period: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let me = directory.node_id().clone();
    let mut published: HashMap<FullJid, DirectoryEntry> = HashMap::new();
    let mut resets = directory.resets();
    let mut changes = view.changes();
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let moved = tokio::select! {
            _ = stop.wait_for(|s| *s) => break,
            _ = tick.tick() => false,
            r = changes.changed() => {
                if r.is_err() {
                    break;
                }
                true
            }
        };
        if moved {
            let n = svc.evict_foreign().await;
            if n > 0 {
                tracing::info!(
                    sessions = n,
                    "ended sessions of accounts that moved to another node"
                );
            }
            continue;
        }
        if resets.has_changed().unwrap_or(false) {
            resets.borrow_and_update();
            let live = svc.live_resources().await;
            let entries: Vec<(FullJid, DirectoryEntry)> = live
                .iter()
                .map(|r| (r.jid.clone(), entry_of(r, &me)))
                .collect();
            match directory.republish(&entries).await {
                Ok(()) => {
                    tracing::info!(
                        entries = entries.len(),
                        "republished the directory after a reset"
                    );
                    published = entries.into_iter().collect();
                }
                Err(e) => tracing::warn!(error = %e, "cannot republish the directory"),
            }
        }
        sync_directory(&svc, directory.as_ref(), &me, &mut published).await;
        match directory.sweep().await {
            Ok(swept) => {
                for s in swept {
                    tracing::info!(jid = %s.jid, node = %s.entry.session_node, "session of a dead node swept");
                    // Also for entries recorded as unavailable: the directory is written once
                    // per heartbeat, so a node that died just after a resource's initial
                    // presence may not have recorded it. A contact that never saw the resource
                    // online ignores the extra unavailable presence.
                    svc.announce_gone(&s.jid).await;
                }
            }
            Err(e) => tracing::debug!(error = %e, "directory sweep failed"),
        }
        // Accounts may also arrive here in a window where edges and this node disagreed.
        svc.evict_foreign().await;
    }
    // Leaving: forget everything this node published.
    for jid in published.keys() {
        let _ = directory.unregister(jid).await;
    }
}

fn entry_of(r: &LiveResource, me: &NodeId) -> DirectoryEntry {
    let (edge_node, connection_id) = match &r.origin {
        Some((edge, conn)) => (NodeId::new(edge).unwrap_or_else(|_| me.clone()), *conn),
        None => (me.clone(), 0),
    };
    DirectoryEntry {
        edge_node,
        connection_id,
        session_node: me.clone(),
        priority: r.priority,
        available: r.available,
    }
}

/// Brings the directory in line with the live resources, writing only what changed.
async fn sync_directory(
    svc: &LocalSessionService,
    directory: &dyn Directory,
    me: &NodeId,
    published: &mut HashMap<FullJid, DirectoryEntry>,
) {
    let live = svc.live_resources().await;
    let mut seen = std::collections::HashSet::with_capacity(live.len());
    for r in &live {
        seen.insert(r.jid.clone());
        let entry = entry_of(r, me);
        match published.get(&r.jid) {
            Some(old) if *old == entry => {}
            Some(old)
                if old.edge_node == entry.edge_node && old.connection_id == entry.connection_id =>
            {
                match directory
                    .update(&r.jid, entry.priority, entry.available)
                    .await
                {
                    Ok(_) => {
                        published.insert(r.jid.clone(), entry);
                    }
                    Err(e) => tracing::debug!(jid = %r.jid, error = %e, "directory update failed"),
                }
            }
            _ => match directory.register(&r.jid, &entry).await {
                Ok(conflict) => {
                    if let Some(other) = conflict.filter(|o| o.session_node != *me) {
                        tracing::debug!(jid = %r.jid, other = %other.session_node, "full jid also bound on another node");
                    }
                    published.insert(r.jid.clone(), entry);
                }
                Err(e) => tracing::debug!(jid = %r.jid, error = %e, "directory register failed"),
            },
        }
    }
    let gone: Vec<FullJid> = published
        .keys()
        .filter(|j| !seen.contains(*j))
        .cloned()
        .collect();
    for jid in gone {
        match directory.unregister(&jid).await {
            Ok(_) => {
                published.remove(&jid);
            }
            Err(e) => tracing::debug!(jid = %jid, error = %e, "directory unregister failed"),
        }
    }
}

/// Edges and routers have no storage: every `period` they ask a live session node (the first
/// that answers, in placement order of a fixed key) for the stored domains, and apply them to
/// `registry` when the version changed. Runs until `stop`.
pub async fn poll_domains(
    view: Arc<View>,
    registry: Arc<session::Domains>,
    period: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let mut clients: HashMap<String, proto::GrpcDomains> = HashMap::new();
    let mut tick = tokio::time::interval(period.max(Duration::from_millis(10)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut changes = view.changes();
    let mut failing = false;
    loop {
        tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            _ = tick.tick() => {}
            // The first session node appearing is worth asking at once.
            r = changes.changed() => if r.is_err() { return },
        }
        let mut answered = false;
        for m in View::ranked(&view.sessions(), b"relais-domains", MAX_CANDIDATES) {
            let client = match clients.get(&m.addr) {
                Some(c) => c.clone(),
                None => match proto::GrpcDomains::connect_lazy_with(
                    format!("http://{}", m.addr),
                    &view.client,
                ) {
                    Ok(c) => {
                        clients.insert(m.addr.clone(), c.clone());
                        c
                    }
                    Err(e) => {
                        tracing::debug!(node = %m.id, error = %e, "bad session node address");
                        continue;
                    }
                },
            };
            let known = registry.version();
            match tokio::time::timeout(period.max(Duration::from_secs(1)), client.list(known)).await
            {
                Ok(Ok((version, Some(records)))) => {
                    if registry.apply(version, &records) {
                        tracing::info!(
                            version,
                            node = %m.id,
                            hosted = registry.snapshot().hosted.len(),
                            "hosted domains updated from a session node"
                        );
                    }
                    answered = true;
                }
                Ok(Ok((_, None))) => answered = true,
                Ok(Err(e)) => tracing::debug!(node = %m.id, error = %e, "domain list failed"),
                Err(_) => tracing::debug!(node = %m.id, "domain list timed out"),
            }
            if answered {
                break;
            }
        }
        if answered {
            failing = false;
        } else if !failing && view.has_sessions() {
            failing = true;
            tracing::warn!("no session node answered the domain list; keeping the last one");
        }
    }
}

/// Connects to Redis.
pub async fn redis(url: &str) -> Result<RedisClient, cluster::ClusterError> {
    RedisClient::connect(&cluster::RedisConfig::new(url)).await
}
