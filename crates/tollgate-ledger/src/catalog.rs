//! What a ledger process keeps in memory instead of reading in every batch: the tariffs and
//! the Subscription-Id → account map (issue: both change rarely, and every CCR needs them).
//!
//! Invalidation across processes: any change to `tariffs` or `subscriptions`, by this process,
//! the CLI, another node or an operator's own SQL, bumps `catalog_version.version` in the same
//! transaction (triggers of migrations `postgres/0005_catalog_version.sql` and
//! `sqlite/0002_catalog_version.sql`). Every batch reads the version first, inside its
//! transaction, and drops what it cached when the version moved; so a change committed before
//! a batch starts is seen by that batch, on every node.

use crate::store::Dialect;
use serde_json::json;
use sqlx::{AnyConnection, Row};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tollgate_ocs::engine::TariffEntry;
use tollgate_ocs::{Price, SubscriptionId, SubscriptionType};

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

impl Catalog {
    /// Reads the version in the caller's transaction and reloads the tariffs when it moved;
    /// returns them.
    pub(crate) async fn tariffs(
        &self,
        conn: &mut AnyConnection,
    ) -> Result<Arc<Vec<TariffEntry>>, sqlx::Error> {
        let version: i64 = sqlx::query("SELECT version FROM catalog_version WHERE id = 1")
            .fetch_one(&mut *conn)
            .await?
            .try_get("version")?;
        if let Some(t) = self.current(version) {
            return Ok(t);
        }
        let tariffs = Arc::new(load_tariffs(conn).await?);
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
        Ok(tariffs)
    }

    /// The accounts of `subs` (those no account holds are absent), looking up in one
    /// statement the ones not cached since the last version change. Call after
    /// [`Catalog::tariffs`] in the same transaction.
    pub(crate) async fn accounts(
        &self,
        conn: &mut AnyConnection,
        dialect: Dialect,
        subs: &[&SubscriptionId],
    ) -> Result<HashMap<SubscriptionId, String>, sqlx::Error> {
        let mut found = HashMap::new();
        let mut missing = Vec::new();
        {
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
        }
        if missing.is_empty() {
            return Ok(found);
        }
        let keys = json!(missing
            .iter()
            .map(|s| json!({"t": s.kind.code(), "d": s.data}))
            .collect::<Vec<_>>())
        .to_string();
        let sql = match dialect {
            Dialect::Postgres => {
                "SELECT s.sub_type, s.sub_data, s.account_id FROM subscriptions s \
                 JOIN jsonb_to_recordset(CAST($1 AS JSONB)) AS x(t int, d text) \
                 ON s.sub_type = x.t AND s.sub_data = x.d"
            }
            Dialect::Sqlite => {
                "SELECT s.sub_type, s.sub_data, s.account_id FROM json_each($1) x \
                 CROSS JOIN subscriptions s \
                 ON s.sub_type = x.value ->> 't' AND s.sub_data = x.value ->> 'd'"
            }
        };
        let mut looked_up: HashMap<SubscriptionId, Option<String>> =
            missing.iter().map(|s| ((*s).clone(), None)).collect();
        for row in sqlx::query(sql).bind(keys).fetch_all(&mut *conn).await? {
            let kind: i64 = row.try_get("sub_type")?;
            let kind = SubscriptionType::from_code(kind).ok_or_else(|| {
                sqlx::Error::Protocol(format!("subscription type {kind} unknown"))
            })?;
            let sub = SubscriptionId {
                kind,
                data: row.try_get("sub_data")?,
            };
            let account: String = row.try_get("account_id")?;
            found.insert(sub.clone(), account.clone());
            looked_up.insert(sub, Some(account));
        }
        let mut c = self.lock();
        if c.accounts.len() + looked_up.len() > MAX_CACHED_SUBSCRIPTIONS {
            c.accounts.clear();
        }
        c.accounts.extend(looked_up);
        Ok(found)
    }

    fn current(&self, version: i64) -> Option<Arc<Vec<TariffEntry>>> {
        let c = self.lock();
        (c.version == Some(version)).then(|| c.tariffs.clone())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Cached> {
        // A panic while holding the lock leaves plain data behind, still consistent.
        self.cached.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Every tariff, in id order (ties between equally specific tariffs go to the first).
async fn load_tariffs(conn: &mut AnyConnection) -> Result<Vec<TariffEntry>, sqlx::Error> {
    sqlx::query(
        "SELECT service_context, rating_group, service_id, unit, currency, price_minor, \
         price_per_units, quantum, min_grant FROM tariffs ORDER BY id",
    )
    .fetch_all(&mut *conn)
    .await?
    .iter()
    .map(|r| {
        let unit: String = r.try_get("unit")?;
        Ok(TariffEntry {
            service_context: r.try_get("service_context")?,
            rating_group: r.try_get("rating_group")?,
            service_id: r.try_get("service_id")?,
            unit: unit.parse().map_err(|e| sqlx::Error::Decode(Box::new(e)))?,
            currency: r.try_get("currency")?,
            price: Price {
                minor: r.try_get("price_minor")?,
                per_units: r.try_get("price_per_units")?,
            },
            quantum: r.try_get("quantum")?,
            min_grant: r.try_get("min_grant")?,
        })
    })
    .collect()
}
