//! `serve --demo`: a demo subscriber and tariffs in a new store, so the quick start has
//! someone to charge. Does nothing when the demo account already exists.

use tollgate_ledger::admin::{self, NewAccount, TariffSpec};
use tollgate_ledger::{AdminError, Database};
use tollgate_ocs::{
    Currency, Money, ServiceKey, SubscriptionId, SubscriptionType, Timestamp, UnitType,
};

pub const DEMO_ACCOUNT: &str = "demo";

pub async fn seed(db: &Database, now: Timestamp) -> anyhow::Result<()> {
    let eur = Currency::parse("EUR")?;
    let account = NewAccount {
        id: DEMO_ACCOUNT.into(),
        currency: eur.clone(),
        balance: Money(1000),
        credit_limit: Money(0),
        subscriptions: vec![
            SubscriptionId::e164("15550000001"),
            SubscriptionId::new(SubscriptionType::SipUri, "sip:alice@example.com"),
        ],
        allowances: Vec::new(),
    };
    match admin::create_account(db, &account, now).await {
        Ok(()) => {}
        Err(AdminError::Exists(_)) => return Ok(()),
        Err(e) => return Err(e.into()),
    }
    // IM sessions by the second, messages by the unit (docs/protocol.md, "Service context,
    // units and payload for OMA IM"), on the IMS context.
    for (unit, price, quantum) in [
        (UnitType::Seconds, "0.01", 60),
        (UnitType::Units, "0.05", 10),
    ] {
        admin::set_tariff(
            db,
            &TariffSpec {
                service: ServiceKey::context("32260@3gpp.org"),
                unit,
                currency: eur.clone(),
                price: price.into(),
                quantum: Some(quantum),
                min_grant: Some(1),
                quota: Default::default(),
                final_unit: Default::default(),
            },
            now,
        )
        .await?;
    }
    tracing::info!(
        "demo account {DEMO_ACCOUNT} seeded: EUR 10.00, e164:15550000001, sip:alice@example.com"
    );
    Ok(())
}
