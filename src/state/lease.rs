//! The run lock of an S3 state store: a lease. A pid check cannot work across pods, so
//! the lock object (`<root>/lock`) holds its holder and an expiry; it is taken
//! create-only, renewed by compare-and-swap (`If-Match` on its ETag) while the run lives,
//! and a lease past its expiry may be taken over (its holder stopped renewing: it died,
//! or lost the store for longer than the lease).

use std::sync::atomic::Ordering;
use std::sync::mpsc::{RecvTimeoutError, Sender, channel};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::StateError;
use super::lock::Holder;
use super::s3::{Condition, PutError, S3State};

/// How long a lease lasts unless renewed (`DRRUN_LEASE_SECONDS`, default 60); it is
/// renewed every third of that.
pub(crate) fn lease_ttl() -> Duration {
    let secs = std::env::var("DRRUN_LEASE_SECONDS")
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .filter(|s| *s >= 3)
        .unwrap_or(60);
    Duration::from_secs(secs)
}

/// The lock object's content.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct LeaseBody {
    #[serde(flatten)]
    pub holder: Holder,
    pub expires_at: DateTime<Utc>,
}

impl LeaseBody {
    fn new(holder: &Holder, ttl: Duration) -> Self {
        Self {
            holder: holder.clone(),
            expires_at: Utc::now() + chrono::Duration::from_std(ttl).unwrap_or_default(),
        }
    }

    fn bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a lease serializes")
    }
}

struct Shared {
    etag: String,
    body: LeaseBody,
}

pub(crate) struct Lease {
    store: Arc<S3State>,
    shared: Arc<Mutex<Shared>>,
    ttl: Duration,
    /// Dropping it stops the renewer.
    stop: Option<Sender<()>>,
    renewer: Option<std::thread::JoinHandle<()>>,
}

const KEY: &str = "lock";

impl Lease {
    /// Takes the lease. Returns the previous holder when an expired lease was taken over.
    /// A live lease is waited for up to `wait`: until it is released or expires.
    pub(crate) fn acquire(
        store: Arc<S3State>,
        holder: &Holder,
        wait: Duration,
    ) -> Result<(Self, Option<String>), StateError> {
        let ttl = lease_ttl();
        let deadline = Utc::now() + chrono::Duration::from_std(wait).unwrap_or_default();
        let mut taken_over = None;
        let mut tries = 0;
        let (etag, body) = loop {
            tries += 1;
            let body = LeaseBody::new(holder, ttl);
            match store.put(KEY, body.bytes(), Some(Condition::Absent)) {
                Ok(etag) => break (etag, body),
                Err(PutError::Other(e)) => return Err(e),
                Err(PutError::Precondition) => {}
            }
            // Someone holds it: alive, or expired?
            let Some((bytes, etag)) = store.get(KEY)? else {
                continue; // released meanwhile
            };
            let current = serde_json::from_slice::<LeaseBody>(&bytes).ok();
            match current {
                Some(c) if c.expires_at > Utc::now() && Utc::now() < deadline => {
                    // Look again when it would expire (or sooner: it may be released).
                    let until = c.expires_at.min(deadline) - Utc::now();
                    let nap = until
                        .to_std()
                        .unwrap_or_default()
                        .min(Duration::from_secs(2));
                    std::thread::sleep(nap + Duration::from_millis(50));
                    tries = 0;
                }
                Some(c) if c.expires_at > Utc::now() => {
                    return Err(StateError::Locked {
                        dir: store.url(),
                        holder: format!(
                            "{} (its lease runs to {})",
                            c.holder,
                            c.expires_at
                                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
                        ),
                    });
                }
                _ if tries > 5 => {
                    return Err(StateError::Store {
                        url: store.url(),
                        message: "the lease changed hands five times while being taken".into(),
                    });
                }
                c => {
                    let body = LeaseBody::new(holder, ttl);
                    match store.put(KEY, body.bytes(), Some(Condition::Matches(&etag))) {
                        Ok(etag) => {
                            taken_over = Some(c.map_or_else(
                                || "an unreadable lease".to_string(),
                                |c| {
                                    format!(
                                        "{} (expired {})",
                                        c.holder,
                                        c.expires_at
                                            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
                                    )
                                },
                            ));
                            break (etag, body);
                        }
                        Err(PutError::Other(e)) => return Err(e),
                        Err(PutError::Precondition) => {}
                    }
                }
            }
        };
        let shared = Arc::new(Mutex::new(Shared { etag, body }));
        let (tx, rx) = channel::<()>();
        let renewer = {
            let store = store.clone();
            let shared = shared.clone();
            std::thread::Builder::new()
                .name("drrun-lease".into())
                .spawn(move || {
                    loop {
                        match rx.recv_timeout(ttl / 3) {
                            Err(RecvTimeoutError::Timeout) => {}
                            _ => return,
                        }
                        if !renew(&store, &shared, ttl) {
                            return;
                        }
                    }
                })
                .expect("the lease renewer starts")
        };
        Ok((
            Self {
                store,
                shared,
                ttl,
                stop: Some(tx),
                renewer: Some(renewer),
            },
            taken_over,
        ))
    }

    /// Rewrites the holder (once the run id is known), renewing the lease.
    pub(crate) fn write(&self, holder: &Holder) -> Result<(), StateError> {
        self.shared.lock().unwrap().body.holder = holder.clone();
        if renew(&self.store, &self.shared, self.ttl) {
            Ok(())
        } else {
            Err(StateError::LeaseLost {
                url: self.store.url(),
            })
        }
    }
}

/// One compare-and-swap renewal; false once the lease is lost to another holder. A
/// failure to reach the store is retried at the next interval: the lease lasts three.
fn renew(store: &S3State, shared: &Mutex<Shared>, ttl: Duration) -> bool {
    let mut s = shared.lock().unwrap();
    let body = LeaseBody::new(&s.body.holder, ttl);
    match store.put(KEY, body.bytes(), Some(Condition::Matches(&s.etag))) {
        Ok(etag) => {
            s.etag = etag;
            s.body = body;
            true
        }
        Err(PutError::Precondition) => {
            store.lost.store(true, Ordering::SeqCst);
            false
        }
        Err(PutError::Other(_)) => true,
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.renewer.take() {
            let _ = t.join();
        }
        // Released only if it is still ours.
        let ours = self.shared.lock().unwrap().etag.clone();
        if !self.store.lost.load(Ordering::SeqCst)
            && let Ok(Some((_, etag))) = self.store.get(KEY)
            && etag == ours
        {
            let _ = self.store.delete(KEY);
        }
    }
}
