//! Sans-io Diameter codec (RFC 6733 §3–§4, §7) with XML dictionaries.
//!
//! Layout: [`header`] holds the 20-octet message header and the open wire-number newtypes
//! (command codes, application ids, result codes, vendor ids); [`avp`] the AVP header, its raw
//! payload (a `Bytes` slice of the received frame) and typed accessors and constructors for every
//! data type of §4.2–4.3, whose value types live in [`types`]; [`message`] decodes and encodes whole
//! messages and builds answers; [`frame`] tells a transport when a frame is whole; [`dictionary`]
//! parses the XML dictionaries (embedded at build time, extendable at run time) and validates a
//! message against its command grammar; [`error`] is the one error enum, whose variants choose
//! the Result-Code and the Failed-AVP of the answer; [`describe`] renders a message as a tree
//! with names and values, as Wireshark does; [`codes`] names the AVPs the application uses;
//! [`wireshark`] reads Wireshark's Diameter dictionary to fill in what ours do not define.
//!
//! Nothing here performs I/O, reads a clock or logs: the peer layer drives it.
#![forbid(unsafe_code)]

pub mod avp;
pub mod codes;
pub mod describe;
pub mod dictionary;
pub mod error;
pub mod frame;
pub mod header;
pub mod message;
pub mod types;
pub mod wireshark;

pub use avp::{Avp, AvpCode, AvpFlags, AvpRef};
pub use dictionary::{
    AvpType, Dictionary, DictionaryError, UnknownAvp, UnknownAvps, ValidationReport,
};
pub use error::{DecodeError, ParentAvp, ProtocolError};
pub use frame::check_frame;
pub use header::{ApplicationId, CommandCode, Flags, Header, ResultCode, VendorId};
pub use message::{Limits, Message};
pub use types::{Address, Time};
pub use wireshark::WiresharkDictionary;
