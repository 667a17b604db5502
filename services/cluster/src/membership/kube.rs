//! Membership from Kubernetes EndpointSlices.
//!
//! Each role has a headless Service; the EndpointSlice controller labels that Service's slices
//! `kubernetes.io/service-name=<service>`. One watcher per role follows those slices; every
//! ready, non-terminating endpoint becomes a member whose address is the endpoint's first
//! address and the Service port with the configured name.

use std::collections::BTreeMap;

use futures_util::StreamExt;
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointSlice};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use kube::{Api, Client};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::{MemberSet, Membership};
use crate::node::{Member, NodeId, Role};

/// Which Service carries one role's members.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KubeRole {
    pub role: Role,
    /// The headless Service's name.
    pub service: String,
    /// The name of the Service port that carries gRPC (an empty string matches an unnamed port).
    pub port_name: String,
}

/// Whether an endpoint should receive traffic: not terminating, and ready (an absent `ready`
/// means unknown, which the API asks consumers to treat as ready).
fn is_live(ep: &Endpoint) -> bool {
    let Some(c) = &ep.conditions else {
        return true;
    };
    c.ready != Some(false) && c.terminating != Some(true)
}

/// The members one EndpointSlice describes for `role`. Pure: no I/O.
///
/// - only endpoints that are ready (or of unknown readiness) and not terminating;
/// - the first address only (the API defines no meaning for further ones);
/// - the port whose name is `port_name`; a slice without it gives no members;
/// - the id is the target Pod's name, else the endpoint's hostname, else the address.
pub fn members_from_slice(slice: &EndpointSlice, role: Role, port_name: &str) -> Vec<Member> {
    let port = slice.ports.iter().flatten().find_map(|p| {
        let name = p.name.as_deref().unwrap_or("");
        (name == port_name)
            .then_some(p.port)
            .flatten()
            .and_then(|n| u16::try_from(n).ok())
            .filter(|n| *n != 0)
    });
    let Some(port) = port else {
        return Vec::new();
    };
    let ipv6 = slice.address_type == "IPv6";
    let mut out = Vec::new();
    for ep in slice.endpoints.iter().filter(|ep| is_live(ep)) {
        let Some(address) = ep.addresses.first() else {
            continue;
        };
        let id = ep
            .target_ref
            .as_ref()
            .and_then(|r| r.name.as_deref())
            .or(ep.hostname.as_deref())
            .unwrap_or(address);
        let Ok(id) = NodeId::new(id) else {
            tracing::warn!(
                role = role.as_str(),
                "skipping endpoint with an unusable name"
            );
            continue;
        };
        let addr = if ipv6 || address.contains(':') {
            format!("[{address}]:{port}")
        } else {
            format!("{address}:{port}")
        };
        out.push(Member { id, role, addr });
    }
    out
}

/// Membership from EndpointSlices. Dropping it stops the watchers.
pub struct KubeMembership {
    rx: watch::Receiver<MemberSet>,
    tasks: Vec<JoinHandle<()>>,
}

impl KubeMembership {
    /// Starts one watcher per role in `namespace`. Members appear once the first list
    /// completes; watch errors are retried with backoff and keep the last known members.
    pub fn start(client: Client, namespace: &str, roles: Vec<KubeRole>) -> Self {
        let (tx, rx) = watch::channel(MemberSet::default());
        let tasks = roles
            .into_iter()
            .map(|kr| {
                let api: Api<EndpointSlice> = Api::namespaced(client.clone(), namespace);
                tokio::spawn(watch_role(api, kr, tx.clone()))
            })
            .collect();
        KubeMembership { rx, tasks }
    }
}

impl KubeMembership {
    /// Connects with the in-cluster (or kubeconfig) credentials and starts watching in
    /// `namespace`, by default this Pod's namespace.
    pub async fn from_env(namespace: Option<&str>, roles: Vec<KubeRole>) -> crate::Result<Self> {
        let client = Client::try_default()
            .await
            .map_err(|e| crate::ClusterError::Config(format!("kubernetes client: {e}")))?;
        let ns = match namespace {
            Some(n) if !n.is_empty() => n.to_owned(),
            _ => client.default_namespace().to_owned(),
        };
        Ok(Self::start(client, &ns, roles))
    }
}

impl Drop for KubeMembership {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl Membership for KubeMembership {
    fn watch(&self) -> watch::Receiver<MemberSet> {
        self.rx.clone()
    }
}

/// Slices by name, and the members each contributed.
#[derive(Default)]
struct SliceView {
    slices: BTreeMap<String, Vec<Member>>,
    init: Option<BTreeMap<String, Vec<Member>>>,
}

impl SliceView {
    /// Applies one watch event; returns true when the current view may have changed.
    fn apply(&mut self, ev: Event<EndpointSlice>, kr: &KubeRole) -> bool {
        let name = |s: &EndpointSlice| s.metadata.name.clone().unwrap_or_default();
        match ev {
            Event::Init => {
                self.init = Some(BTreeMap::new());
                false
            }
            Event::InitApply(s) => {
                let members = members_from_slice(&s, kr.role, &kr.port_name);
                self.init.get_or_insert_default().insert(name(&s), members);
                false
            }
            Event::InitDone => {
                self.slices = self.init.take().unwrap_or_default();
                true
            }
            Event::Apply(s) => {
                let members = members_from_slice(&s, kr.role, &kr.port_name);
                self.slices.insert(name(&s), members);
                true
            }
            Event::Delete(s) => self.slices.remove(&name(&s)).is_some(),
        }
    }

    fn members(&self) -> Vec<Member> {
        self.slices.values().flatten().cloned().collect()
    }
}

async fn watch_role(api: Api<EndpointSlice>, kr: KubeRole, tx: watch::Sender<MemberSet>) {
    let selector = format!("kubernetes.io/service-name={}", kr.service);
    let mut events = watcher::watcher(api, watcher::Config::default().labels(&selector))
        .default_backoff()
        .boxed();
    let mut view = SliceView::default();
    while let Some(ev) = events.next().await {
        match ev {
            Ok(ev) => {
                if view.apply(ev, &kr) {
                    let members = view.members();
                    tx.send_if_modified(|cur| {
                        let mut next = cur.clone();
                        next.set_role(kr.role, members);
                        if next == *cur {
                            false
                        } else {
                            *cur = next;
                            true
                        }
                    });
                }
            }
            Err(error) => {
                tracing::warn!(role = kr.role.as_str(), service = %kr.service, %error, "endpointslice watch failed");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use k8s_openapi::api::core::v1::ObjectReference;
    use k8s_openapi::api::discovery::v1::{EndpointConditions, EndpointPort};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    use super::*;

    fn ep(
        addrs: &[&str],
        pod: Option<&str>,
        ready: Option<bool>,
        terminating: Option<bool>,
    ) -> Endpoint {
        Endpoint {
            addresses: addrs.iter().map(|a| (*a).to_owned()).collect(),
            conditions: Some(EndpointConditions {
                ready,
                serving: ready,
                terminating,
            }),
            target_ref: pod.map(|p| ObjectReference {
                kind: Some("Pod".into()),
                name: Some(p.into()),
                namespace: Some("relais".into()),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn port(name: Option<&str>, n: i32) -> EndpointPort {
        EndpointPort {
            name: name.map(str::to_owned),
            port: Some(n),
            protocol: Some("TCP".into()),
            app_protocol: None,
        }
    }

    fn slice(name: &str, ty: &str, ports: Vec<EndpointPort>, eps: Vec<Endpoint>) -> EndpointSlice {
        EndpointSlice {
            address_type: ty.into(),
            endpoints: eps,
            metadata: ObjectMeta {
                name: Some(name.into()),
                ..Default::default()
            },
            ports: Some(ports),
        }
    }

    fn ids_addrs(ms: &[Member]) -> Vec<(String, String)> {
        ms.iter()
            .map(|m| (m.id.to_string(), m.addr.clone()))
            .collect()
    }

    #[test]
    fn ready_endpoints_become_members_on_the_named_port() {
        let s = slice(
            "session-abc",
            "IPv4",
            vec![port(Some("metrics"), 9090), port(Some("grpc"), 7001)],
            vec![
                ep(&["10.0.0.1"], Some("session-0"), Some(true), Some(false)),
                ep(&["10.0.0.2"], Some("session-1"), Some(false), Some(false)),
                ep(&["10.0.0.3"], Some("session-2"), Some(true), Some(true)),
                ep(&["10.0.0.4", "10.9.9.9"], Some("session-3"), None, None),
            ],
        );
        let ms = members_from_slice(&s, Role::Session, "grpc");
        assert_eq!(
            ids_addrs(&ms),
            [
                ("session-0".into(), "10.0.0.1:7001".into()),
                ("session-3".into(), "10.0.0.4:7001".into()),
            ]
        );
        assert!(ms.iter().all(|m| m.role == Role::Session));
        assert_eq!(
            ids_addrs(&members_from_slice(&s, Role::Session, "metrics"))[0].1,
            "10.0.0.1:9090"
        );
    }

    #[test]
    fn missing_port_or_addresses_give_no_members() {
        let s = slice(
            "x",
            "IPv4",
            vec![port(Some("http"), 80)],
            vec![ep(&["10.0.0.1"], Some("p"), Some(true), None)],
        );
        assert!(members_from_slice(&s, Role::Edge, "grpc").is_empty());
        let mut no_ports = s.clone();
        no_ports.ports = None;
        assert!(members_from_slice(&no_ports, Role::Edge, "http").is_empty());
        let bad_port = slice(
            "x",
            "IPv4",
            vec![port(Some("grpc"), 70000)],
            s.endpoints.clone(),
        );
        assert!(members_from_slice(&bad_port, Role::Edge, "grpc").is_empty());
        let empty = slice(
            "x",
            "IPv4",
            vec![port(Some("grpc"), 1)],
            vec![ep(&[], Some("p"), Some(true), None)],
        );
        assert!(members_from_slice(&empty, Role::Edge, "grpc").is_empty());
    }

    #[test]
    fn ids_fall_back_to_hostname_then_address_and_ipv6_is_bracketed() {
        let mut by_host = ep(&["fd00::5"], None, Some(true), None);
        by_host.hostname = Some("router-1".into());
        let by_addr = ep(&["fd00::6"], None, Some(true), None);
        let s = slice("r", "IPv6", vec![port(None, 7003)], vec![by_host, by_addr]);
        let ms = members_from_slice(&s, Role::Router, "");
        assert_eq!(
            ids_addrs(&ms),
            [
                ("router-1".into(), "[fd00::5]:7003".into()),
                ("fd00::6".into(), "[fd00::6]:7003".into()),
            ]
        );
        // A target name that is not a valid node id is skipped rather than mangled.
        let odd = slice(
            "r",
            "IPv4",
            vec![port(None, 1)],
            vec![ep(&["10.0.0.1"], Some("a{b}"), Some(true), None)],
        );
        assert!(members_from_slice(&odd, Role::Router, "").is_empty());
    }

    #[test]
    fn view_tracks_slices_across_init_apply_and_delete() {
        let kr = KubeRole {
            role: Role::Session,
            service: "relais-session".into(),
            port_name: "grpc".into(),
        };
        let a = slice(
            "a",
            "IPv4",
            vec![port(Some("grpc"), 7001)],
            vec![ep(&["10.0.0.1"], Some("s0"), Some(true), None)],
        );
        let b = slice(
            "b",
            "IPv4",
            vec![port(Some("grpc"), 7001)],
            vec![ep(&["10.0.0.2"], Some("s1"), Some(true), None)],
        );
        let mut view = SliceView::default();
        assert!(!view.apply(Event::Init, &kr));
        assert!(!view.apply(Event::InitApply(a.clone()), &kr));
        assert!(
            view.members().is_empty(),
            "no members before the list completes"
        );
        assert!(view.apply(Event::InitDone, &kr));
        assert_eq!(view.members().len(), 1);
        assert!(view.apply(Event::Apply(b.clone()), &kr));
        assert_eq!(view.members().len(), 2);
        assert!(view.apply(Event::Delete(a.clone()), &kr));
        assert_eq!(
            ids_addrs(&view.members()),
            [("s1".into(), "10.0.0.2:7001".into())]
        );
        // A relist that no longer includes b drops it.
        view.apply(Event::Init, &kr);
        view.apply(Event::InitApply(a), &kr);
        view.apply(Event::InitDone, &kr);
        assert_eq!(
            ids_addrs(&view.members()),
            [("s0".into(), "10.0.0.1:7001".into())]
        );
    }
}
