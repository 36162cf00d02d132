//! `tollgate im-sim`: an OMA IM server replaying the seed flows over CH-2, through the CH-2
//! client of `tollgate-cc`, against Tollgate or any Diameter Ro OCS.
//!
//! Scenarios (docs/protocol.md, "Seed flows"): `one-to-one` (seed 000, 6.3.3.1: reserve before the
//! INVITE is forwarded), `conference` (seed 000, 6.3.3.2: 200 OK to the initiator first, so a
//! refusal ends the session with BYE), `deferred` (seed 003, 6.3.2.8: reserve at REGISTER, push the
//! granted number of messages, one debit once every MSRP SEND has settled). Each step prints like
//! the seed's numbered steps: the SIP/MSRP event, the CH-2 message, the CCR/CCA with key AVPs, and
//! the balance after it when the ledger can be read.

use anyhow::{bail, Context};
use clap::{Args, ValueEnum};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;
use tollgate_cc::ch2::client::{
    CCFH_CONTINUE, CCFH_RETRY_AND_TERMINATE, CCFH_TERMINATE, DDFH_CONTINUE,
    DDFH_TERMINATE_OR_BUFFER,
};
use tollgate_cc::ch2::*;
use tollgate_ocs::{Clock, SubscriptionId, SystemClock};

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Scenario {
    /// Flow A: one-to-one IM session (SCUR).
    OneToOne,
    /// Flow B: conference with --invitees invitees (SCUR).
    Conference,
    /// Flow C: deferred message push at REGISTER (ECUR).
    Deferred,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum FailureHandling {
    Terminate,
    Continue,
    RetryAndTerminate,
}

#[derive(Args, Debug)]
pub struct ImSimArgs {
    #[arg(value_enum)]
    pub scenario: Scenario,
    /// The OCS; repeat for a secondary (tried when the first is down).
    #[arg(long = "server", default_value = "127.0.0.1:3868")]
    pub servers: Vec<SocketAddr>,
    /// The charged user: originator (one-to-one, conference) or recipient (deferred).
    #[arg(long, default_value = "sip:alice@example.com")]
    pub user: String,
    /// The callee (one-to-one) or message sender (deferred).
    #[arg(long, default_value = "sip:bob@example.com")]
    pub peer: String,
    /// Conference invitees.
    #[arg(long, default_value_t = 3)]
    pub invitees: u32,
    /// Simulated talk time of a session (not waited for).
    #[arg(long, value_parser = humantime::parse_duration, default_value = "90s")]
    pub talk: Duration,
    /// Seconds requested per SessionRequest.
    #[arg(long, default_value_t = 60)]
    pub quota: u32,
    /// Stored messages waiting for the deferred push.
    #[arg(long, default_value_t = 5)]
    pub messages: u64,
    /// Deferred push: this many MSRP SENDs are answered 4xx.
    #[arg(long, default_value_t = 0)]
    pub msrp_4xx: u64,
    /// Deferred push: this many MSRP SENDs time out.
    #[arg(long, default_value_t = 0)]
    pub msrp_timeouts: u64,
    /// The callee rejects the INVITE (one-to-one), an invitee declines (conference), or the
    /// INVITE to the recipient fails (deferred).
    #[arg(long)]
    pub callee_rejects: bool,
    /// The IM server vanishes after the reservation: no stop/debit is ever sent, and the OCS
    /// must release the reservation when Tcc expires.
    #[arg(long)]
    pub vanish: bool,
    /// Credit-Control-Failure-Handling until a CCA says otherwise.
    #[arg(long, value_enum, default_value = "terminate")]
    pub ccfh: FailureHandling,
    /// The client's Tx timer.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "10s")]
    pub tx: Duration,
    #[arg(long, default_value = "32260@3gpp.org")]
    pub service_context: String,
    /// Leave out Service-Generic-Information and IM-Information (for OCSs that answer 5001).
    #[arg(long)]
    pub no_oma_payload: bool,
    #[arg(long)]
    pub no_ims_payload: bool,
    #[arg(long, default_value = "im.localdomain")]
    pub origin_host: String,
    #[arg(long, default_value = "localdomain")]
    pub origin_realm: String,
    #[arg(long, default_value = "localdomain")]
    pub destination_realm: String,
    /// The account whose balance is printed after each step.
    #[arg(long, default_value = "demo")]
    pub account: String,
    /// The OCS ledger to read balances from (default: the embedded store in --data-dir, when
    /// it exists). Balances are left out when it cannot be read.
    #[arg(long, env = "TOLLGATE_DATABASE_URL")]
    pub database_url: Option<String>,
    #[arg(long, default_value = tollgate_ledger::cli::DEFAULT_DATA_DIR)]
    pub data_dir: PathBuf,
    /// Write every frame sent to the OCS, one hex line each.
    #[arg(long)]
    pub wire_log: Option<PathBuf>,
    /// After this much talk in a session, have the OCS re-authorise it: a Re-Auth-Request is
    /// queued in the ledger (as `tollgate session reauth --account` does), the OCS sends it,
    /// and the IM server reports its usage and asks again. Needs the ledger (--database-url).
    #[arg(long, value_parser = humantime::parse_duration, conflicts_with = "abort_after")]
    pub reauth_after: Option<Duration>,
    /// After this much talk in a session, have the OCS abort it (Abort-Session-Request): the
    /// IM server ends the session (BYE) and reports its usage. Needs the ledger.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub abort_after: Option<Duration>,
}

fn units_u32(u: Option<Ch2Units>) -> u32 {
    u.map(|g| u32::try_from(g.amount()).unwrap_or(u32::MAX))
        .unwrap_or(0)
}

struct Sim {
    client: Arc<Ch2Client>,
    args: ImSimArgs,
    user: SubscriptionId,
    /// The start's Service-Information, repeated in interim and stop so the charging data
    /// record written at the end describes the whole session.
    session_payload: ImPayload,
    ledger: Option<tollgate_ledger::Database>,
    step: u32,
    /// The OCS's RAR and ASR, as the CH-2 client hands them over.
    from_ocs: Option<tokio::sync::mpsc::UnboundedReceiver<OcsRequest>>,
}

impl Sim {
    fn sip(&mut self, what: &str) {
        self.step += 1;
        println!("{:>2}  SIP/MSRP  {what}", self.step);
    }

    fn note(&self, what: &str) {
        println!("          {what}");
    }

    async fn balance(&self) -> String {
        let Some(db) = &self.ledger else {
            return String::new();
        };
        match tollgate_ledger::admin::show(db, &self.args.account, SystemClock.now()).await {
            Ok(b) => {
                let f = |m: i64| tollgate_ocs::Money(m).to_decimal(b.scale);
                format!(
                    "  [{} balance {} {}, reserved {}]",
                    self.args.account,
                    f(b.posted.0),
                    b.currency,
                    f(b.reserved.0)
                )
            }
            Err(_) => String::new(),
        }
    }

    async fn report(&mut self, ch2: &str, ccr: &str, r: &Response) {
        self.step += 1;
        println!("{:>2}  CH-2      IM → OCS  {ch2}", self.step);
        println!(
            "          CCR       {ccr} Session-Id {} CC-Request-Number {}",
            r.session_id, r.cc_request_number
        );
        let mut cca = match r.result_code {
            Some(c) => format!("Result-Code {c}"),
            None => format!(
                "no answer ({})",
                r.failure.as_deref().unwrap_or("unknown reason")
            ),
        };
        if let Some(s) = r.service_result_code {
            cca.push_str(&format!(", MSCC Result-Code {s}"));
        }
        if let Some(g) = r.granted {
            cca.push_str(&format!(", GSU {g}"));
        }
        if let Some(v) = r.validity_time_s {
            cca.push_str(&format!(", Validity-Time {v} s"));
        }
        if let Some(f) = r.final_unit_action {
            cca.push_str(&format!(", Final-Unit-Action {f:?}"));
        }
        if let Some(c) = r.cost {
            cca.push_str(&format!(", Cost-Information {c}"));
        }
        if let Some(b) = r.remaining_balance {
            cca.push_str(&format!(", Remaining-Balance {b}"));
        }
        if let Some(e) = r.enough_credit {
            cca.push_str(if e { ", ENOUGH_CREDIT" } else { ", NO_CREDIT" });
        }
        let bal = self.balance().await;
        println!("          CCA       {cca}{bal}");
        self.step += 1;
        println!(
            "{:>2}  CH-2      OCS → IM  Response({:?}{})",
            self.step,
            r.outcome,
            r.granted
                .map(|g| format!(", {g} granted"))
                .unwrap_or_default()
        );
    }

    fn payload(&self, method: &str, role: RoleOfNode, t: ApplicationServiceType) -> ImPayload {
        ImPayload {
            sip_method: Some(method.into()),
            role_of_node: Some(role),
            call_id: Some(format!("{}@{}", std::process::id(), self.args.origin_host)),
            icid: Some(format!("icid-{}", std::process::id())),
            calling_party: Some(match role {
                RoleOfNode::Originating => self.args.user.clone(),
                RoleOfNode::Terminating => self.args.peer.clone(),
            }),
            called_party: None,
            invitees: Vec::new(),
            service_type: Some(t),
            application_session_id: Some(std::process::id()),
            messages: None,
        }
    }

    async fn start(&mut self, correlation: &str, payload: ImPayload) -> anyhow::Result<Response> {
        let mut req = SessionRequest::start(
            correlation,
            self.user.clone(),
            Ch2Units::Seconds(self.args.quota),
        );
        req.payload = payload;
        self.session_payload = req.payload.clone();
        let r = self.client.session(&req).await?;
        let ccr = format!(
            "CCR-I: Subscription-Id {}, MSCC{{RSU CC-Time {}}}, Service-Information{{SIP-Method {}, App-Service-Type {}}}",
            self.user,
            self.args.quota,
            req.payload.sip_method.as_deref().unwrap_or("-"),
            req.payload.service_type.map(|t| t as i32).unwrap_or(0)
        );
        self.report("SessionRequest(start)", &ccr, &r).await;
        Ok(r)
    }

    /// Talks for --talk seconds of simulated time on the first grant, reporting each used
    /// grant with SessionRequest(interim) and the last with stop. Returns the seconds charged.
    async fn talk(&mut self, correlation: &str, first: &Response) -> anyhow::Result<()> {
        let mut left = u32::try_from(self.args.talk.as_secs()).unwrap_or(u32::MAX);
        let mut grant = units_u32(first.granted);
        let mut last = first.final_unit_action.is_some();
        // When the OCS is to speak first (--reauth-after / --abort-after): seconds of talk.
        let mut ocs_asks = self.ocs_trigger();
        if first.outcome != Outcome::Granted {
            // Free (4011) or uncharged (CCFH CONTINUE): the session runs without CH-2.
            self.note(&format!(
                "session runs {left} s without credit control ({:?})",
                first.outcome
            ));
            return Ok(());
        }
        loop {
            if let Some((kind, at)) = ocs_asks {
                if at < left.min(grant) {
                    // The OCS asks while this grant is being used: `at` seconds of it are.
                    ocs_asks = None;
                    left -= at;
                    match self.ocs_asks(correlation, kind, at).await? {
                        Some(r) => {
                            grant = units_u32(r.granted);
                            last = r.final_unit_action.is_some();
                            continue;
                        }
                        None => return Ok(()),
                    }
                }
                ocs_asks = Some((kind, at - left.min(grant)));
            }
            // A grant of nothing (or the last grant) ends the session: asking again for the
            // same would loop for ever.
            if left <= grant || last || grant == 0 {
                let used = left.min(grant);
                if used < left {
                    self.note(&format!(
                        "final units used up after {used} s: IM server ends the session (Final-Unit-Action TERMINATE)"
                    ));
                }
                self.sip("IM → both legs: BYE; 200 OK");
                let mut req = SessionRequest::stop(
                    correlation,
                    Ch2Units::Seconds(used),
                    TerminationCause::Logout,
                );
                req.payload = self.session_payload.clone();
                let r = self.client.session(&req).await?;
                self.report(
                    "SessionRequest(stop)",
                    &format!("CCR-T: MSCC{{USU CC-Time {used}, Reporting-Reason FINAL}}, Termination-Cause DIAMETER_LOGOUT"),
                    &r,
                )
                .await;
                return Ok(());
            }
            self.note(&format!(
                "session running: {grant} s granted quota used up ({left} s of talk left)"
            ));
            left -= grant;
            let mut req = SessionRequest::interim(
                correlation,
                Ch2Units::Seconds(grant),
                Some(Ch2Units::Seconds(self.args.quota)),
            );
            req.payload = self.session_payload.clone();
            let r = self.client.session(&req).await?;
            self.report(
                "SessionRequest(interim)",
                &format!(
                    "CCR-U: MSCC{{USU CC-Time {grant}, RSU CC-Time {}, Reporting-Reason QUOTA_EXHAUSTED}}",
                    self.args.quota
                ),
                &r,
            )
            .await;
            if !r.allows_service() {
                // 4012 on CCR-U: the OCS debited the usage and closed the session (RFC 4006
                // §7); nothing more to report.
                self.sip(&format!(
                    "credit exhausted ({:?}): IM → both legs BYE (Reason: insufficient credit)",
                    r.outcome
                ));
                return Ok(());
            }
            if r.outcome != Outcome::Granted {
                self.note("session continues without credit control");
                return Ok(());
            }
            grant = units_u32(r.granted);
            last = r.final_unit_action.is_some();
        }
    }

    /// What --reauth-after / --abort-after ask for, in seconds of talk.
    fn ocs_trigger(&self) -> Option<(OcsRequestKind, u32)> {
        let secs = |d: Duration| u32::try_from(d.as_secs()).unwrap_or(u32::MAX);
        match (self.args.reauth_after, self.args.abort_after) {
            (Some(d), _) => Some((OcsRequestKind::Reauthorise, secs(d))),
            (None, Some(d)) => Some((OcsRequestKind::Abort, secs(d))),
            (None, None) => None,
        }
    }

    /// The OCS speaks first, `used` seconds into the current grant: the request is queued in
    /// the ledger for the account, the OCS sends it, the CH-2 client answers it and hands it
    /// over, and the IM server reports. Returns the interim's response after a re-auth, None
    /// once an aborted session has been stopped.
    async fn ocs_asks(
        &mut self,
        correlation: &str,
        kind: OcsRequestKind,
        used: u32,
    ) -> anyhow::Result<Option<Response>> {
        use tollgate_ledger::session_requests::{self, SessionRequestKind, SessionSelector};
        let Some(db) = &self.ledger else {
            bail!("--reauth-after and --abort-after need the OCS ledger (--database-url)");
        };
        let (queued, action) = match kind {
            OcsRequestKind::Reauthorise => (SessionRequestKind::Reauth, "reauth"),
            OcsRequestKind::Abort => (SessionRequestKind::Abort, "abort"),
        };
        let account = SessionSelector::Account(self.args.account.clone());
        let ids = session_requests::enqueue(db, queued, &account, "im-sim", SystemClock.now())
            .await
            .context("cannot queue the request in the ledger")?;
        self.note(&format!(
            "{used} s into the grant, the operator runs: tollgate session {action} --account {} (request {})",
            self.args.account,
            ids.iter().map(i64::to_string).collect::<Vec<_>>().join(", ")
        ));
        let Some(from_ocs) = self.from_ocs.as_mut() else {
            bail!("the CH-2 client's OCS requests were taken");
        };
        let request = tokio::time::timeout(Duration::from_secs(15), from_ocs.recv())
            .await
            .ok()
            .flatten()
            .context(
                "the OCS sent no request within 15 s (is this tollgate serve on that ledger?)",
            )?;
        let name = match kind {
            OcsRequestKind::Reauthorise => {
                "Re-Auth-Request (Re-Auth-Request-Type AUTHORIZE_ONLY); RAA 2001"
            }
            OcsRequestKind::Abort => "Abort-Session-Request; ASA 2001",
        };
        self.step += 1;
        println!("{:>2}  Diameter  OCS → IM  {name}", self.step);
        println!("          Session-Id {}", request.session_id);
        match kind {
            OcsRequestKind::Reauthorise => {
                let mut req = SessionRequest::interim(
                    correlation,
                    Ch2Units::Seconds(used),
                    Some(Ch2Units::Seconds(self.args.quota)),
                );
                req.reporting_reason = Some(ReportingReason::ForcedReauthorisation);
                req.payload = self.session_payload.clone();
                let r = self.client.session(&req).await?;
                let ccr = format!(
                    "CCR-U: MSCC{{USU CC-Time {used}, RSU CC-Time {}, Reporting-Reason FORCED_REAUTHORISATION}}",
                    self.args.quota
                );
                self.report("SessionRequest(interim)", &ccr, &r).await;
                if !r.allows_service() {
                    self.sip(&format!(
                        "credit refused on re-authorisation ({:?}): IM → both legs BYE",
                        r.outcome
                    ));
                    return Ok(None);
                }
                Ok(Some(r))
            }
            OcsRequestKind::Abort => {
                self.sip("IM → both legs: BYE (the OCS aborted the charging session)");
                let mut req = SessionRequest::stop(
                    correlation,
                    Ch2Units::Seconds(used),
                    TerminationCause::Administrative,
                );
                req.payload = self.session_payload.clone();
                let r = self.client.session(&req).await?;
                let ccr = format!(
                    "CCR-T: MSCC{{USU CC-Time {used}, Reporting-Reason FINAL}}, Termination-Cause DIAMETER_ADMINISTRATIVE"
                );
                self.report("SessionRequest(stop)", &ccr, &r).await;
                Ok(None)
            }
        }
    }

    fn sip_refusal(outcome: Outcome) -> &'static str {
        match outcome {
            Outcome::InsufficientCredit => "402 Payment Required",
            Outcome::UnknownUser | Outcome::Denied => "403 Forbidden",
            _ => "500 Server Internal Error",
        }
    }

    async fn one_to_one(&mut self) -> anyhow::Result<()> {
        println!(
            "== Flow A: one-to-one session (seed 000, 6.3.3.1): {} → {}",
            self.args.user, self.args.peer
        );
        let c = "one-to-one";
        self.sip(&format!(
            "client → IM: INVITE {} (held until charged)",
            self.args.peer
        ));
        let mut p = self.payload(
            "INVITE",
            RoleOfNode::Originating,
            ApplicationServiceType::Inviting,
        );
        p.called_party = Some(self.args.peer.clone());
        let r = self.start(c, p).await?;
        if !r.allows_service() {
            self.sip(&format!(
                "IM → client: {} (INVITE rejected, not forwarded)",
                Self::sip_refusal(r.outcome)
            ));
            return Ok(());
        }
        self.sip(&format!("IM → {}: INVITE", self.args.peer));
        if self.args.callee_rejects {
            self.sip(&format!("{} → IM: 486 Busy Here", self.args.peer));
            self.stop_unused(c, TerminationCause::ServiceNotProvided)
                .await?;
            self.sip("IM → client: 486 Busy Here");
            return Ok(());
        }
        self.sip(&format!("{} → IM: 200 OK", self.args.peer));
        self.sip("IM → client: 200 OK");
        if self.args.vanish {
            self.vanish();
            return Ok(());
        }
        self.talk(c, &r).await
    }

    async fn stop_unused(&mut self, c: &str, cause: TerminationCause) -> anyhow::Result<()> {
        let mut req = SessionRequest::stop(c, Ch2Units::Seconds(0), cause);
        req.payload = self.session_payload.clone();
        let r = self.client.session(&req).await?;
        self.report(
            "SessionRequest(stop)",
            &format!(
                "CCR-T: MSCC{{USU CC-Time 0, Reporting-Reason FINAL}}, Termination-Cause {}",
                cause.name()
            ),
            &r,
        )
        .await;
        Ok(())
    }

    fn vanish(&mut self) {
        self.step += 1;
        println!(
            "{:>2}  --        the IM server vanishes: no further CH-2; the OCS releases the reservation when Tcc expires",
            self.step
        );
    }

    async fn conference(&mut self) -> anyhow::Result<()> {
        let invitees: Vec<String> = (1..=self.args.invitees)
            .map(|i| format!("sip:invitee{i}@example.com"))
            .collect();
        println!(
            "== Flow B: conference (seed 000, 6.3.3.2): {} invites {}",
            self.args.user,
            invitees.join(", ")
        );
        let c = "conference";
        self.sip("client → IM (focus): INVITE (conference)");
        self.sip("IM → client: 200 OK (before charging, as the seed orders it)");
        let mut p = self.payload(
            "INVITE",
            RoleOfNode::Originating,
            ApplicationServiceType::Inviting,
        );
        p.called_party = Some(format!(
            "sip:conference-{}@{}",
            std::process::id(),
            self.args.origin_host
        ));
        p.invitees = invitees.clone();
        let r = self.start(c, p).await?;
        if !r.allows_service() {
            self.sip(&format!(
                "IM → client: BYE (Reason: {}); invitees are not invited",
                match r.outcome {
                    Outcome::InsufficientCredit => "insufficient credit",
                    _ => "charging refused",
                }
            ));
            return Ok(());
        }
        self.sip(&format!("IM → invitees: INVITE × {}", invitees.len()));
        for (i, who) in invitees.iter().enumerate() {
            if self.args.callee_rejects && i == 0 {
                self.note(&format!("{who} → IM: 603 Decline (no charging change)"));
            } else {
                self.note(&format!("{who} → IM: 200 OK"));
            }
        }
        if self.args.vanish {
            self.vanish();
            return Ok(());
        }
        self.talk(c, &r).await
    }

    async fn deferred(&mut self) -> anyhow::Result<()> {
        println!(
            "== Flow C: deferred message push (seed 003, 6.3.2.8): {} stored message(s) for {}",
            self.args.messages, self.args.user
        );
        let c = "deferred";
        self.sip(&format!("{} → IM: REGISTER", self.args.user));
        self.sip(&format!("IM → {}: 200 OK", self.args.user));
        let mut p = self.payload(
            "REGISTER",
            RoleOfNode::Terminating,
            ApplicationServiceType::Retrieval,
        );
        p.messages = Some(ImCounters {
            total_sent: u32::try_from(self.args.messages).ok(),
            ..ImCounters::default()
        });
        let mut req = EventRequest::new(
            EventAction::ReserveUnits,
            c,
            self.user.clone(),
            Some(Ch2Units::Messages(self.args.messages)),
        );
        req.payload = p.clone();
        let r = self.client.event(&req).await?;
        self.report(
            "EventRequest(reserve units)",
            &format!(
                "CCR-I: Subscription-Id {}, MSCC{{RSU CC-Service-Specific-Units {}}}, App-Service-Type 102, IM-Information{{Total-Number-Of-Messages-Sent {}}}",
                self.user, self.args.messages, self.args.messages
            ),
            &r,
        )
        .await;
        if !r.allows_service() {
            self.note(&format!(
                "no push ({:?}): all {} message(s) stay stored",
                r.outcome, self.args.messages
            ));
            return Ok(());
        }
        let k = match (r.outcome, r.granted) {
            (Outcome::Granted, Some(g)) => g.amount().min(self.args.messages),
            (Outcome::Granted, None) => 0,
            _ => self.args.messages, // free or uncharged: push everything
        };
        self.sip(&format!("IM → {}: INVITE (MSRP session)", self.args.user));
        if self.args.callee_rejects {
            self.sip(&format!(
                "{} → IM: 480 Temporarily Unavailable",
                self.args.user
            ));
            self.debit(c, 0, 0, TerminationCause::ServiceNotProvided, &p)
                .await?;
            self.note(&format!(
                "all {} message(s) stay stored",
                self.args.messages
            ));
            return Ok(());
        }
        self.sip(&format!("{} → IM: 200 OK; ACK", self.args.user));
        self.sip(&format!(
            "IM → {}: MSRP SEND × {k} (the granted count{})",
            self.args.user,
            if k < self.args.messages {
                format!("; {} stay stored", self.args.messages - k)
            } else {
                String::new()
            }
        ));
        if self.args.vanish {
            self.vanish();
            return Ok(());
        }
        let failed = self.args.msrp_4xx.min(k);
        let timed_out = self.args.msrp_timeouts.min(k - failed);
        let delivered = k - failed - timed_out;
        self.sip(&format!(
            "{} → IM: MSRP 200 OK × {delivered}, 415 × {failed}, no response (timeout) × {timed_out}; all settled",
            self.args.user
        ));
        self.debit(c, k, delivered, TerminationCause::Logout, &p)
            .await?;
        self.sip(&format!("IM → {}: BYE; 200 OK", self.args.user));
        if failed + timed_out > 0 {
            self.note(&format!(
                "{} undelivered message(s) stay stored for the next push",
                failed + timed_out
            ));
        }
        Ok(())
    }

    async fn debit(
        &mut self,
        c: &str,
        sent: u64,
        delivered: u64,
        cause: TerminationCause,
        p: &ImPayload,
    ) -> anyhow::Result<()> {
        let mut req = EventRequest::new(
            EventAction::DebitUnits,
            c,
            self.user.clone(),
            Some(Ch2Units::Messages(delivered)),
        );
        req.termination_cause = Some(cause);
        req.payload = ImPayload {
            messages: Some(ImCounters {
                total_sent: u32::try_from(sent).ok(),
                successfully_sent: u32::try_from(delivered).ok(),
                ..ImCounters::default()
            }),
            ..p.clone()
        };
        let r = self.client.event(&req).await?;
        self.report(
            "EventRequest(debit units)",
            &format!(
                "CCR-T: MSCC{{USU CC-Service-Specific-Units {delivered}, Reporting-Reason FINAL}}, IM-Information{{Total-Number-Of-Messages-Sent {sent}, Number-Of-Messages-Successfully-Sent {delivered}}}, Termination-Cause {}", cause.name()
            ),
            &r,
        )
        .await;
        Ok(())
    }
}

async fn open_ledger(args: &ImSimArgs) -> Option<tollgate_ledger::Database> {
    let url = match &args.database_url {
        Some(u) => u.clone(),
        None => {
            let file = args.data_dir.join("ledger.sqlite3");
            if !file.exists() {
                return None;
            }
            tollgate_ledger::cli::default_database_url(&args.data_dir)
        }
    };
    let cfg = tollgate_ledger::PoolConfig {
        max_connections: 1,
        ..tollgate_ledger::PoolConfig::default()
    };
    tollgate_ledger::Database::connect(&url, &cfg).await.ok()
}

pub async fn run(args: ImSimArgs) -> anyhow::Result<ExitCode> {
    let user: SubscriptionId = args
        .user
        .parse()
        .with_context(|| format!("--user {}", args.user))?;
    if args.quota == 0 {
        bail!("--quota must be at least 1 second");
    }
    let mut profile = Ch2Profile::new(
        &args.origin_host,
        &args.origin_realm,
        &args.destination_realm,
    );
    profile.service_context_id = args.service_context.clone();
    profile.oma_payload = !args.no_oma_payload;
    profile.ims_payload = !args.no_ims_payload;
    let mut cfg = Ch2ClientConfig::new(profile, args.servers.clone());
    cfg.tx = args.tx;
    cfg.credit_control_failure_handling = match args.ccfh {
        FailureHandling::Terminate => CCFH_TERMINATE,
        FailureHandling::Continue => CCFH_CONTINUE,
        FailureHandling::RetryAndTerminate => CCFH_RETRY_AND_TERMINATE,
    };
    cfg.direct_debiting_failure_handling = match args.ccfh {
        FailureHandling::Continue => DDFH_CONTINUE,
        _ => DDFH_TERMINATE_OR_BUFFER,
    };
    cfg.limits.cea_timeout = Duration::from_secs(3);
    cfg.record_wire = args.wire_log.is_some();
    let client = Ch2Client::start(cfg)?;
    if !client.wait_open(Duration::from_secs(5)).await {
        eprintln!(
            "warning: no OCS among {:?} answered CER within 5 s; requests will meet the failure handling",
            args.servers
        );
    }
    let ledger = open_ledger(&args).await;
    if (args.reauth_after.is_some() || args.abort_after.is_some()) && ledger.is_none() {
        bail!("--reauth-after and --abort-after queue the request in the OCS ledger: give --database-url (or the --data-dir of the embedded store)");
    }
    let from_ocs = client.ocs_requests();
    let mut sim = Sim {
        from_ocs,
        client: Arc::clone(&client),
        user,
        ledger,
        args,
        step: 0,
        session_payload: ImPayload::default(),
    };
    let ran = match sim.args.scenario {
        Scenario::OneToOne => sim.one_to_one().await,
        Scenario::Conference => sim.conference().await,
        Scenario::Deferred => sim.deferred().await,
    };
    let bal = sim.balance().await;
    if !bal.is_empty() {
        println!("== end{bal}");
    }
    if client.buffered() > 0 {
        println!(
            "== {} request(s) buffered for replay were not answered",
            client.buffered()
        );
    }
    let vanish = sim.args.vanish;
    let wire_log = sim.args.wire_log.clone();
    drop(sim);
    if !vanish {
        client.close().await;
    }
    // A vanished IM server sends no DPR: the connection just drops when the process exits.
    if let Some(path) = wire_log {
        let text: String = client
            .wire()
            .iter()
            .map(|f| format!("{}\n", hex::encode(f)))
            .collect();
        std::fs::write(&path, text)
            .with_context(|| format!("cannot write --wire-log {}", path.display()))?;
    }
    ran?;
    Ok(ExitCode::SUCCESS)
}
