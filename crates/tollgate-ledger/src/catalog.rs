//! What a ledger process keeps in memory instead of reading in every batch: the tariffs and
//! the Subscription-Id → account map (issue: both change rarely, and every CCR needs them).
//!
//! Invalidation across processes: any change to `tariffs` or `subscriptions`, by this process,
//! the CLI, another node or an operator's own SQL, bumps `catalog_version.version` in the same
//! transaction (triggers of migrations `postgres/0005_catalog_version.sql` and
//! `sqlite/0002_catalog_version.sql`). Every batch reads the version first, inside its
//! transaction, and drops what it cached when the version moved; so a change committed before
//! a batch starts is seen by that batch, on every node.

//! This module is the cache alone; each dialect's batch code (`batch/pg.rs`,
//! `batch/sqlite.rs`) reads the version, the tariffs and the subscriptions for it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tollgate_ocs::engine::TariffEntry;
use tollgate_ocs::SubscriptionId;

/// Most Subscription-Ids remembered; past it the map starts again empty (a bound, not an
/// eviction policy: every entry can be read again in one statement).
pub const MAX_CACHED_SUBSCRIPTIONS: usize = 1_000_000;

#[derive(Default)]
struct Cached {
    /// The `catalog_version` this was loaded at; `None` before the first batch.
    version: Option<i64>,
    tariffs: Arc<Vec<TariffEntry>>,
    /// Subscription-Id → account id, or `None`: no account holds it (also cached, so unknown
    /// subscribers cost no lookup either).
    accounts: HashMap<SubscriptionId, Option<String>>,
}

/// The cache of one ledger process, shared by its batch workers.
#[derive(Default)]
pub struct Catalog {
    cached: Mutex<Cached>,
}

/// What the cache could not answer for a batch's Subscription-Ids.
pub(crate) struct AccountLookup<'s> {
    /// Subscription-Id → account id, for those cached since the last version change.
    pub found: HashMap<SubscriptionId, String>,
    /// Not cached: to be read from `subscriptions` and handed to [`Catalog::remember`].
    pub missing: Vec<&'s SubscriptionId>,
}

impl Catalog {
    /// The tariffs cached at `version` (read in the batch's transaction), or `None`: load them
    /// and hand them to [`Catalog::store_tariffs`].
    pub(crate) fn tariffs_at(&self, version: i64) -> Option<Arc<Vec<TariffEntry>>> {
        let c = self.lock();
        (c.version == Some(version)).then(|| c.tariffs.clone())
    }

    /// Cache the tariffs loaded at `version`, dropping the Subscription-Ids cached at an
    /// older one; returns them.
    pub(crate) fn store_tariffs(
        &self,
        version: i64,
        tariffs: Vec<TariffEntry>,
    ) -> Arc<Vec<TariffEntry>> {
        let tariffs = Arc::new(tariffs);
        let mut c = self.lock();
        // Another worker may have loaded a newer version meanwhile: keep the newest.
        if c.version.is_none_or(|v| v < version) {
            metrics::counter!("tollgate_ledger_catalog_reloads_total").increment(1);
            *c = Cached {
                version: Some(version),
                tariffs: tariffs.clone(),
                accounts: HashMap::new(),
            };
        }
        tariffs
    }

    /// The accounts of `subs` the cache knows (those no account holds are known too, and
    /// absent from `found`), and the ones to look up. Call after the version check of the
    /// same transaction.
    pub(crate) fn accounts<'s>(&self, subs: &[&'s SubscriptionId]) -> AccountLookup<'s> {
        let mut found = HashMap::new();
        let mut missing = Vec::new();
        let c = self.lock();
        for s in subs {
            match c.accounts.get(*s) {
                Some(Some(a)) => {
                    found.insert((*s).clone(), a.clone());
                }
                Some(None) => {}
                None => missing.push(*s),
            }
        }
        AccountLookup { found, missing }
    }

    /// Remember what a lookup of `missing` found: the account of each, or `None`.
    pub(crate) fn remember(&self, looked_up: HashMap<SubscriptionId, Option<String>>) {
        let mut c = self.lock();
        if c.accounts.len() + looked_up.len() > MAX_CACHED_SUBSCRIPTIONS {
            c.accounts.clear();
        }
        c.accounts.extend(looked_up);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Cached> {
        // A panic while holding the lock leaves plain data behind, still consistent.
        self.cached.lock().unwrap_or_else(|e| e.into_inner())
    }
}
