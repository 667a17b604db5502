//! Certificates for every hosted domain, kept current while the server runs.
//!
//! For each hosted domain the [`CertManager`] puts a certificate in the [`CertStore`] (which
//! picks one per connection by SNI), in this order:
//! 1. `cert_dir` (Prosody's layout): `{cert_dir}/{domain}/fullchain.pem` with `privkey.pem`, or
//!    `{cert_dir}/{domain}.crt` with `{domain}.key`;
//! 2. a configured certificate (`[[tls.certificates]]`) naming the domain or a wildcard that
//!    covers it: nothing more to load;
//! 3. a self-signed certificate generated (once) in the data directory.
//!
//! Domains added at runtime get theirs when the registry changes; removed ones leave the
//! store. Every `reload` period the files behind each loaded certificate are checked (the
//! resolved path, so a Kubernetes Secret that swaps its `..data` symlink counts, plus mtime
//! and size) and a changed one is loaded again and replaces the entry: new handshakes get
//! the new certificate, established connections keep theirs. A domain that used a fallback
//! picks up files that appear in `cert_dir`. A file that fails to load keeps the previous
//! certificate (and logs why).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use session::Domains;
use tokio::sync::watch;

use crate::tls::{CertSource, CertStore, TlsError, ensure_self_signed, load_certified_key};

/// Where certificates come from.
#[derive(Clone, Debug, Default)]
pub struct CertConfig {
    /// `[[tls.certificates]]`: exact names or `*.example.org` wildcards.
    pub configured: Vec<CertSource>,
    /// Prosody-like directory of per-domain certificates.
    pub cert_dir: Option<PathBuf>,
    /// Where self-signed certificates are generated (`data_dir/certs`).
    pub self_signed_dir: PathBuf,
}

/// What a file looked like when it was loaded.
#[derive(Clone, Debug, PartialEq, Eq)]
struct FileStamp {
    resolved: PathBuf,
    modified: Option<SystemTime>,
    len: u64,
}

fn stamp(path: &Path) -> Option<FileStamp> {
    let meta = std::fs::metadata(path).ok()?;
    Some(FileStamp {
        resolved: std::fs::canonicalize(path).unwrap_or_else(|_| path.to_owned()),
        modified: meta.modified().ok(),
        len: meta.len(),
    })
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Origin {
    Configured,
    CertDir,
    /// Covered by a configured certificate (nothing of its own in the store).
    Covered,
    SelfSigned,
}

#[derive(Debug)]
struct Loaded {
    origin: Origin,
    /// (cert, key) and what they looked like, for the certificates we loaded from files.
    files: Option<(CertSource, FileStamp, FileStamp)>,
}

/// Keeps the certificate store in line with the hosted domains and the files on disk.
pub struct CertManager {
    store: Arc<CertStore>,
    cfg: CertConfig,
    /// By store name (a domain, or `*.parent` for a configured wildcard).
    loaded: HashMap<String, Loaded>,
}

impl CertManager {
    /// Loads the configured certificates (a failure is an error: the configuration is wrong).
    pub fn new(store: Arc<CertStore>, cfg: CertConfig) -> Result<Self, TlsError> {
        let mut m = CertManager {
            store,
            cfg,
            loaded: HashMap::new(),
        };
        for src in m.cfg.configured.clone() {
            let key = load_certified_key(&src.cert, &src.key)?;
            m.store.insert(&src.domain, key);
            let name = src.domain.trim_end_matches('.').to_ascii_lowercase();
            let files = stamp(&src.cert).zip(stamp(&src.key));
            m.loaded.insert(
                name,
                Loaded {
                    origin: Origin::Configured,
                    files: files.map(|(c, k)| (src, c, k)),
                },
            );
        }
        Ok(m)
    }

    pub fn store(&self) -> &Arc<CertStore> {
        &self.store
    }

    /// The files of `domain` in `cert_dir`, if both exist.
    fn in_cert_dir(&self, domain: &str) -> Option<CertSource> {
        let dir = self.cfg.cert_dir.as_ref()?;
        let sub = dir.join(domain);
        let candidates = [
            (sub.join("fullchain.pem"), sub.join("privkey.pem")),
            (
                dir.join(format!("{domain}.crt")),
                dir.join(format!("{domain}.key")),
            ),
        ];
        candidates
            .into_iter()
            .find(|(c, k)| c.is_file() && k.is_file())
            .map(|(cert, key)| CertSource {
                domain: domain.to_owned(),
                cert,
                key,
            })
    }

    fn covered(&self, domain: &str) -> bool {
        self.cfg.configured.iter().any(|c| {
            let pattern = c.domain.trim_end_matches('.').to_ascii_lowercase();
            pattern == domain
                || match (pattern.strip_prefix("*."), domain.split_once('.')) {
                    (Some(base), Some((_, parent))) => base == parent,
                    _ => false,
                }
        })
    }

    /// Loads `src` into the store under `domain`; `None` (logged) when it fails.
    fn load_files(&self, domain: &str, src: CertSource) -> Option<Loaded> {
        let (Some(c), Some(k)) = (stamp(&src.cert), stamp(&src.key)) else {
            return None;
        };
        match load_certified_key(&src.cert, &src.key) {
            Ok(key) => {
                self.store.insert(domain, key);
                Some(Loaded {
                    origin: Origin::CertDir,
                    files: Some((src, c, k)),
                })
            }
            Err(e) => {
                tracing::warn!(domain, error = %e, "cannot load the certificate from cert_dir");
                None
            }
        }
    }

    /// Gives `domain` a certificate (see the module documentation for the order).
    fn resolve(&self, domain: &str) -> Result<Loaded, TlsError> {
        if let Some(src) = self.in_cert_dir(domain)
            && let Some(l) = self.load_files(domain, src)
        {
            tracing::debug!(domain, "certificate from cert_dir");
            return Ok(l);
        }
        if self.covered(domain) {
            return Ok(Loaded {
                origin: Origin::Covered,
                files: None,
            });
        }
        let (src, generated) = ensure_self_signed(&self.cfg.self_signed_dir, domain)?;
        if generated {
            tracing::info!(domain, cert = %src.cert.display(), "generated a self-signed certificate");
        }
        self.store
            .insert(domain, load_certified_key(&src.cert, &src.key)?);
        Ok(Loaded {
            origin: Origin::SelfSigned,
            files: None,
        })
    }

    /// Brings the store in line with `domains` (prepared names): new domains get a
    /// certificate, domains no longer hosted lose theirs. Returns (added, removed). An error
    /// for one domain is logged and does not stop the others; with `strict` (start-up) the
    /// first error is returned instead.
    pub fn sync<S: AsRef<str>>(
        &mut self,
        domains: &[S],
        strict: bool,
    ) -> Result<(usize, usize), TlsError> {
        let mut added = 0;
        let wanted: std::collections::HashSet<&str> = domains.iter().map(AsRef::as_ref).collect();
        // In the given order: the first certificate stored is the default one.
        for d in domains.iter().map(AsRef::as_ref) {
            if self.loaded.contains_key(d) {
                continue;
            }
            match self.resolve(d) {
                Ok(l) => {
                    self.loaded.insert(d.to_owned(), l);
                    added += 1;
                }
                Err(e) if strict => return Err(e),
                Err(e) => {
                    tracing::warn!(domain = %d, error = %e, "no certificate for a hosted domain")
                }
            }
        }
        let gone: Vec<String> = self
            .loaded
            .iter()
            .filter(|(name, l)| l.origin != Origin::Configured && !wanted.contains(name.as_str()))
            .map(|(name, _)| name.clone())
            .collect();
        for name in &gone {
            self.loaded.remove(name);
            if !self
                .cfg
                .configured
                .iter()
                .any(|c| c.domain.eq_ignore_ascii_case(name))
            {
                self.store.remove(name);
            }
        }
        Ok((added, gone.len()))
    }

    /// Reloads the certificates whose files changed, and moves domains to files that
    /// appeared in `cert_dir`. Returns how many entries were replaced.
    pub fn reload_changed(&mut self) -> usize {
        let mut replaced = 0;
        let names: Vec<String> = self.loaded.keys().cloned().collect();
        for name in names {
            let Some(entry) = self.loaded.get(&name) else {
                continue;
            };
            match (&entry.files, entry.origin) {
                (Some((src, c, k)), origin) => {
                    let (Some(c2), Some(k2)) = (stamp(&src.cert), stamp(&src.key)) else {
                        // Mid-swap or deleted: keep serving what we have.
                        continue;
                    };
                    if c2 == *c && k2 == *k {
                        continue;
                    }
                    match load_certified_key(&src.cert, &src.key) {
                        Ok(key) => {
                            self.store.insert(&src.domain, key);
                            let src = src.clone();
                            tracing::info!(domain = %name, cert = %src.cert.display(), "certificate reloaded");
                            self.loaded.insert(
                                name,
                                Loaded {
                                    origin,
                                    files: Some((src, c2, k2)),
                                },
                            );
                            replaced += 1;
                        }
                        Err(e) => {
                            tracing::warn!(domain = %name, error = %e, "changed certificate does not load; keeping the previous one")
                        }
                    }
                }
                (None, Origin::Covered | Origin::SelfSigned) => {
                    if let Some(src) = self.in_cert_dir(&name)
                        && let Some(l) = self.load_files(&name, src)
                    {
                        tracing::info!(domain = %name, "certificate from cert_dir now in use");
                        self.loaded.insert(name, l);
                        replaced += 1;
                    }
                }
                (None, _) => {}
            }
        }
        replaced
    }

    /// Follows `registry` (new and removed domains) and polls the files every `reload`
    /// until `stop`.
    pub async fn run(
        mut self,
        registry: Arc<Domains>,
        reload: Duration,
        mut stop: watch::Receiver<bool>,
    ) {
        let mut domains = registry.subscribe();
        let mut tick = tokio::time::interval(reload.max(Duration::from_millis(100)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tokio::select! {
                _ = stop.wait_for(|s| *s) => return,
                r = domains.changed() => {
                    if r.is_err() {
                        return;
                    }
                    let names = registry.names();
                    // Key generation and file reads stay off the reactor.
                    let res = tokio::task::block_in_place(|| self.sync(&names, false));
                    if let Ok((added, removed)) = res
                        && added + removed > 0
                    {
                        tracing::info!(added, removed, "certificates follow the hosted domains");
                    }
                }
                _ = tick.tick() => {
                    tokio::task::block_in_place(|| self.reload_changed());
                }
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn cert_of(store: &CertStore, name: &str) -> Vec<u8> {
        store.lookup(Some(name)).unwrap().cert[0].as_ref().to_vec()
    }

    fn write_pair(dir: &Path, domain: &str) -> (PathBuf, PathBuf) {
        // A freshly generated pair in a scratch directory, copied into place.
        let scratch = tempfile::tempdir().unwrap();
        let (src, _) = ensure_self_signed(scratch.path(), domain).unwrap();
        std::fs::create_dir_all(dir).unwrap();
        let cert = dir.join("fullchain.pem");
        let key = dir.join("privkey.pem");
        std::fs::copy(&src.cert, &cert).unwrap();
        std::fs::copy(&src.key, &key).unwrap();
        (cert, key)
    }

    #[test]
    fn cert_dir_wins_then_fallbacks_and_reload_replaces() {
        let root = tempfile::tempdir().unwrap();
        let cert_dir = root.path().join("certs-dir");
        let generated = root.path().join("generated");
        write_pair(&cert_dir.join("a.example"), "a.example");
        let store = Arc::new(CertStore::default());
        let mut m = CertManager::new(
            store.clone(),
            CertConfig {
                configured: vec![],
                cert_dir: Some(cert_dir.clone()),
                self_signed_dir: generated.clone(),
            },
        )
        .unwrap();
        assert_eq!(m.sync(&["a.example", "b.example"], true).unwrap(), (2, 0));
        let a1 = cert_of(&store, "a.example");
        let b1 = cert_of(&store, "b.example");
        assert_ne!(a1, b1);
        assert!(
            generated.join("b.example.crt").exists(),
            "b falls back to self-signed"
        );
        assert!(!generated.join("a.example.crt").exists());

        // Nothing changed: nothing reloaded.
        assert_eq!(m.reload_changed(), 0);
        // New files for a (a renewal): replaced.
        write_pair(&cert_dir.join("a.example"), "a.example");
        assert_eq!(m.reload_changed(), 1);
        assert_ne!(cert_of(&store, "a.example"), a1);
        // Files appear for b: it moves to them.
        write_pair(&cert_dir.join("b.example"), "b.example");
        assert_eq!(m.reload_changed(), 1);
        assert_ne!(cert_of(&store, "b.example"), b1);
        // A broken renewal keeps the previous certificate.
        let a2 = cert_of(&store, "a.example");
        std::fs::write(cert_dir.join("a.example").join("fullchain.pem"), "junk").unwrap();
        assert_eq!(m.reload_changed(), 0);
        assert_eq!(cert_of(&store, "a.example"), a2);

        // b is no longer hosted: it leaves the store (lookups fall back to the default).
        assert_eq!(m.sync(&["a.example"], true).unwrap(), (0, 1));
        assert_eq!(cert_of(&store, "b.example"), cert_of(&store, "a.example"));
        assert_eq!(
            cert_of(&store, "a.example"),
            a2,
            "the default follows a reload"
        );
    }

    #[test]
    fn configured_wildcards_cover_domains() {
        let root = tempfile::tempdir().unwrap();
        let (w, _) = ensure_self_signed(&root.path().join("w"), "example.net").unwrap();
        let store = Arc::new(CertStore::default());
        let mut m = CertManager::new(
            store.clone(),
            CertConfig {
                configured: vec![CertSource {
                    domain: "*.example.net".into(),
                    cert: w.cert.clone(),
                    key: w.key.clone(),
                }],
                cert_dir: None,
                self_signed_dir: root.path().join("generated"),
            },
        )
        .unwrap();
        m.sync(&["chat.example.net"], true).unwrap();
        assert!(
            !root
                .path()
                .join("generated")
                .join("chat.example.net.crt")
                .exists()
        );
        let wild = load_certified_key(&w.cert, &w.key).unwrap();
        assert_eq!(
            cert_of(&store, "chat.example.net"),
            wild.cert[0].as_ref().to_vec()
        );
    }
}
