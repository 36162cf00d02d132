//! The Diameter peer layer (RFC 6733 §2, §5, §6 and RFC 3539).
//!
//! Layout: [`framing`] splits a byte stream into frames with the codec's frame check;
//! [`fsm`] is the §5.6 peer state machine and [`watchdog`] the RFC 3539 watchdog, both pure
//! data plus transitions over `(event, now)`; [`capabilities`] builds and reads CER/CEA;
//! [`dedup`] remembers answers for duplicate detection (§6.1.4); [`deviation`] logs and counts
//! what real clients send against an RFC's letter that we accept; [`node`] drives it all over
//! TCP or TLS ([`tls`]), one task per connection, and hands requests to an [`Application`]
//! ([`app`]), which is all the credit-control layer sees of Diameter transport.
#![forbid(unsafe_code)]

pub mod app;
pub mod capabilities;
pub mod config;
pub mod dedup;
pub mod deviation;
pub mod framing;
pub mod fsm;
pub mod node;
#[cfg(feature = "testing")]
pub mod testing;
pub mod tls;
pub mod watchdog;

pub use app::{AnswerFuture, Application, Request};
pub use config::{LocalPeer, PeerLimits, UnknownAvpPolicy};
pub use node::{Node, PeerError};
