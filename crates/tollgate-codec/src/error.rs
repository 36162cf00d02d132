//! The codec's one error enum. Each variant is a reason to refuse a message and knows the
//! Result-Code (RFC 6733 §7.1) and the Failed-AVP content (§7.5) of the answer it deserves, so
//! the peer layer never has to choose.

use crate::avp::{Avp, AvpCode, AvpFlags, AvpRef};
use crate::codes;
use crate::header::{ApplicationId, CommandCode, Header, ResultCode};

/// Why a message is refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ProtocolError {
    /// Version field other than 1 (§3) → 5011.
    #[error("unsupported Diameter version {0}")]
    UnsupportedVersion(u8),
    /// Message Length under 20, not a multiple of 4, or not the octets received (§3) → 5015.
    #[error("invalid message length {length} ({received} octets received)")]
    InvalidMessageLength { length: u32, received: usize },
    /// A message longer than the configured maximum → 5015; the transport closes the link.
    #[error("message length {length} exceeds the maximum of {max} octets")]
    MessageTooLarge { length: u32, max: u32 },
    /// A reserved header flag bit is set → 5013.
    #[error("reserved command flag bits set (flags {0:#04x})")]
    InvalidBitInHeader(u8),
    /// Command flags inconsistent with the command (§3, §7.1.3) → 3008.
    #[error("invalid command flags {flags:#04x}: {reason}")]
    InvalidHeaderBits { flags: u8, reason: &'static str },
    /// An AVP flag bit that is reserved or unrecognized (§4.1) → 3009.
    #[error("AVP {} has invalid flag bits {:#04x}", .avp.code, .avp.flags.0)]
    InvalidAvpBits { avp: Avp },
    /// A flag value the AVP's definition forbids, e.g. M on an M-must-not AVP (§4.5) → 5016.
    #[error("AVP {} ({}) has a flag combination its definition forbids: {reason}", .avp.code, .name)]
    InvalidAvpBitCombo {
        avp: Avp,
        name: String,
        reason: &'static str,
    },
    /// AVP length wrong for its type, or past the end of the message or group (§7.5) → 5014.
    #[error("AVP {} has an invalid length", .avp.code)]
    InvalidAvpLength { avp: Avp },
    /// A value the AVP's type or definition does not allow (§7.1.5) → 5004.
    #[error("AVP {} has an invalid value: {reason}", .avp.code)]
    InvalidAvpValue { avp: Avp, reason: &'static str },
    /// An M-flagged AVP we do not know (§4.1) → 5001.
    #[error("AVP {} (vendor {}) is not supported", .avp.code, .avp.vendor_id)]
    AvpUnsupported { avp: Avp },
    /// A required AVP is absent (§7.5: Failed-AVP holds an AVP with its code and vendor and a
    /// zeroed minimum value) → 5005.
    #[error("required AVP {name} ({}) is missing", .avp.code)]
    MissingAvp { avp: Avp, name: String },
    /// An AVP the grammar does not allow here (§7.1.5) → 5008.
    #[error("AVP {} is not allowed here", .avp.code)]
    AvpNotAllowed { avp: Avp },
    /// More instances than the grammar allows; Failed-AVP is the first excess one → 5009.
    #[error("AVP {} occurs too many times", .avp.code)]
    AvpOccursTooManyTimes { avp: Avp },
    /// A command code no application here defines (§7.1.3) → 3001.
    #[error("command {0} is not supported")]
    CommandUnsupported(CommandCode),
    /// An application id we do not serve (§7.1.3) → 3007.
    #[error("application {0} is not supported")]
    ApplicationUnsupported(ApplicationId),
    /// More AVPs than the configured limit, counting grouped members → 5012.
    #[error("more than {limit} AVPs in one message")]
    TooManyAvps { limit: usize },
    /// Grouped AVPs nested deeper than the configured limit → 5012.
    #[error("grouped AVPs nested deeper than {limit} levels")]
    NestingTooDeep { limit: usize },
    /// An error about an AVP inside Grouped AVPs: the same answer as `error`, with Failed-AVP
    /// wrapping the offender in copies of its parents (§7.5), and an Error-Message that names
    /// the offender first, then where it sits.
    #[error("{error}, inside {}", parent_path(.parents))]
    Nested {
        /// The enclosing Grouped AVPs, outermost first.
        parents: Vec<ParentAvp>,
        error: Box<ProtocolError>,
    },
}

/// The header of a Grouped AVP enclosing an offender: what §7.5's wrapping copies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParentAvp {
    pub code: u32,
    pub vendor_id: u32,
    pub flags: AvpFlags,
}

fn parent_path(parents: &[ParentAvp]) -> String {
    let mut path = String::new();
    // Innermost parent first: "inside AVP 456, inside AVP 873".
    for (i, p) in parents.iter().rev().enumerate() {
        if i > 0 {
            path.push_str(" in ");
        }
        path.push_str(&format!("AVP {}", p.code));
        if p.vendor_id != 0 {
            path.push_str(&format!(" (vendor {})", p.vendor_id));
        }
    }
    path
}

impl ProtocolError {
    /// The Result-Code the answer carries.
    pub fn result_code(&self) -> ResultCode {
        use ProtocolError::*;
        match self {
            UnsupportedVersion(_) => ResultCode::UNSUPPORTED_VERSION,
            InvalidMessageLength { .. } | MessageTooLarge { .. } => {
                ResultCode::INVALID_MESSAGE_LENGTH
            }
            InvalidBitInHeader(_) => ResultCode::INVALID_BIT_IN_HEADER,
            InvalidHeaderBits { .. } => ResultCode::INVALID_HDR_BITS,
            InvalidAvpBits { .. } => ResultCode::INVALID_AVP_BITS,
            InvalidAvpBitCombo { .. } => ResultCode::INVALID_AVP_BIT_COMBO,
            InvalidAvpLength { .. } => ResultCode::INVALID_AVP_LENGTH,
            InvalidAvpValue { .. } => ResultCode::INVALID_AVP_VALUE,
            AvpUnsupported { .. } => ResultCode::AVP_UNSUPPORTED,
            MissingAvp { .. } => ResultCode::MISSING_AVP,
            AvpNotAllowed { .. } => ResultCode::AVP_NOT_ALLOWED,
            AvpOccursTooManyTimes { .. } => ResultCode::AVP_OCCURS_TOO_MANY_TIMES,
            CommandUnsupported(_) => ResultCode::COMMAND_UNSUPPORTED,
            ApplicationUnsupported(_) => ResultCode::APPLICATION_UNSUPPORTED,
            TooManyAvps { .. } | NestingTooDeep { .. } => ResultCode::UNABLE_TO_COMPLY,
            Nested { error, .. } => error.result_code(),
        }
    }

    /// The error itself, without the Grouped AVPs it sits in.
    pub fn innermost(&self) -> &ProtocolError {
        match self {
            ProtocolError::Nested { error, .. } => error,
            e => e,
        }
    }

    /// The offending AVP itself (the innermost one, not wrapped in its parents), if the
    /// error has one.
    pub fn offending_avp(&self) -> Option<&Avp> {
        use ProtocolError::*;
        match self.innermost() {
            InvalidAvpBits { avp }
            | InvalidAvpBitCombo { avp, .. }
            | InvalidAvpLength { avp }
            | InvalidAvpValue { avp, .. }
            | AvpUnsupported { avp }
            | MissingAvp { avp, .. }
            | AvpNotAllowed { avp }
            | AvpOccursTooManyTimes { avp } => Some(avp),
            _ => None,
        }
    }

    /// The Failed-AVP (279) to put in the answer, if the error has an offending AVP: the
    /// offender inside copies of the Grouped AVPs that enclose it (§7.5: "the Failed-AVP MAY
    /// contain the grouped AVP, which in turn contains the single offending AVP").
    pub fn failed_avp(&self) -> Option<Avp> {
        let mut avp = self.offending_avp()?.clone();
        if let ProtocolError::Nested { parents, .. } = self {
            for p in parents.iter().rev() {
                let code = AvpCode::new(p.code, p.vendor_id, p.flags.is_mandatory());
                let mut wrapped = Avp::grouped(code, std::slice::from_ref(&avp));
                wrapped.flags = p.flags;
                avp = wrapped;
            }
        }
        Some(Avp::grouped(codes::FAILED_AVP, std::slice::from_ref(&avp)))
    }

    /// Records that the offending AVP sits inside `parent`, so Failed-AVP shows the path to a
    /// bad member and Error-Message names the member, not the group. Errors without an
    /// offending AVP are returned as they are.
    pub fn within(self, parent: &AvpRef<'_>) -> Self {
        if self.offending_avp().is_none() {
            return self;
        }
        let parent = ParentAvp {
            code: parent.code,
            vendor_id: parent.vendor_id,
            flags: parent.flags,
        };
        match self {
            ProtocolError::Nested { mut parents, error } => {
                parents.insert(0, parent);
                ProtocolError::Nested { parents, error }
            }
            e => ProtocolError::Nested {
                parents: vec![parent],
                error: Box::new(e),
            },
        }
    }
}

/// A message that could not be decoded. The header is kept whenever its 20 octets were there,
/// so the answer can carry the request's hop-by-hop and end-to-end identifiers (§6.2).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{error}")]
pub struct DecodeError {
    pub header: Option<Header>,
    pub error: ProtocolError,
}

impl DecodeError {
    pub fn result_code(&self) -> ResultCode {
        self.error.result_code()
    }
}
