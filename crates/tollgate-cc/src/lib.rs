//! The Diameter Credit-Control application (RFC 4006/8506, profiled as 3GPP Ro by TS 32.299).
//!
//! Layout: [`ccr`] parses a validated CCR into plain values (or the 5005/5004 answer it
//! deserves); [`app`] is the server: it maps CCR-I/U/T/E and MSCC onto the ledger's
//! reserve/commit/release/direct-debit/refund/enquiry operations and implements the peer
//! layer's `Application`; [`cca`] builds the answer; [`charging_data`] extracts what lands in a
//! charging data record; [`config`] is what the operator chooses about answers; [`ch2`] is
//! the other side: the CH-2 model, its mapping onto CCRs and the client an IM server embeds.
#![forbid(unsafe_code)]

pub mod app;
pub mod cca;
pub mod ccr;
pub mod ch2;
pub mod charging_data;
pub mod config;
pub mod server_requests;

pub use app::CreditControl;
pub use config::CcConfig;
