//! The Diameter peer layer (RFC 6733 §2, §5, §6 and RFC 3539).
//!
//! Layout: [`framing`] splits a byte stream into frames with the codec's frame check;
//! [`fsm`] is the §5.6 peer state machine and [`watchdog`] the RFC 3539 watchdog, both pure
//! data plus transitions over `(event, now)`; [`capabilities`] builds and reads CER/CEA and
//! [`base`] the other base-protocol messages; [`dedup`] remembers answers for duplicate
//! detection (§6.1.4); [`deviation`] logs and counts what real clients send against an RFC's
//! letter that we accept. [`node`] is the API; behind it the listener accepts connections,
//! the peer table holds each peer's machine, one driver task per peer runs the machines over
//! its connections (TCP, TLS via [`tls`], or anything [`Transport`]), and dispatch hands
//! requests to an [`Application`] ([`app`]), which is all the credit-control layer sees of
//! Diameter transport. `docs/architecture.md`, "The peer layer's parts", has the map.
#![forbid(unsafe_code)]

pub mod app;
pub mod base;
pub mod capabilities;
pub mod config;
pub mod dedup;
pub mod deviation;
mod dispatch;
mod driver;
pub mod framing;
pub mod fsm;
mod link;
mod listener;
pub mod node;
mod table;
#[cfg(feature = "testing")]
pub mod testing;
pub mod tls;
pub mod watchdog;
pub mod wire;

pub use app::{AnswerFuture, Application, Request};
pub use config::{LocalPeer, PeerLimits, UnknownAvpPolicy};
pub use driver::Connector;
pub use link::{BoxedTransport, Transport};
pub use node::{Node, NodeStats, PeerError};
pub use table::{OpenPeer, PeerChange, PeerChangeKind};
pub use wire::WireLog;
