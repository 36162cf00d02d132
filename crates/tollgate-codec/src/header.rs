//! The Diameter message header (RFC 6733 §3).
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |    Version    |                 Message Length                |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! | command flags |                  Command Code                 |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                         Application-ID                        |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                      Hop-by-Hop Identifier                    |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                      End-to-End Identifier                    |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//!  command flags: R P E T r r r r
//! ```

use crate::error::ProtocolError;
use bytes::BufMut;
use std::fmt;

/// Length of the fixed header in octets.
pub const HEADER_LEN: usize = 20;
/// The only Diameter version (RFC 6733 §3).
pub const VERSION: u8 = 1;

/// Declares an open newtype over a wire number: named constants for the values we know,
/// and any other value still representable, so unknown commands, applications or result
/// codes survive decoding and can be answered (3001, 3007) instead of being dropped.
macro_rules! wire_number {
    ($(#[$meta:meta])* $name:ident($repr:ty) { $($(#[$cmeta:meta])* $konst:ident = $val:expr, $text:expr;)* }) => {
        $(#[$meta])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
        pub struct $name(pub $repr);

        impl $name {
            $($(#[$cmeta])* pub const $konst: Self = Self($val);)*

            /// The registered name of this value, if it is one we know.
            pub fn name(self) -> Option<&'static str> {
                match self.0 {
                    $($val => Some($text),)*
                    _ => None,
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                match self.name() {
                    Some(n) => write!(f, "{} ({})", n, self.0),
                    None => write!(f, "{}", self.0),
                }
            }
        }

        impl From<$repr> for $name {
            fn from(v: $repr) -> Self {
                Self(v)
            }
        }
    };
}

wire_number! {
    /// A 24-bit command code (RFC 6733 §3.1, RFC 4006 §3).
    CommandCode(u32) {
        CAPABILITIES_EXCHANGE = 257, "Capabilities-Exchange";
        RE_AUTH = 258, "Re-Auth";
        ACCOUNTING = 271, "Accounting";
        CREDIT_CONTROL = 272, "Credit-Control";
        ABORT_SESSION = 274, "Abort-Session";
        SESSION_TERMINATION = 275, "Session-Termination";
        DEVICE_WATCHDOG = 280, "Device-Watchdog";
        DISCONNECT_PEER = 282, "Disconnect-Peer";
    }
}

wire_number! {
    /// An application id (RFC 6733 §2.4).
    ApplicationId(u32) {
        COMMON = 0, "Diameter Common Messages";
        ACCOUNTING = 3, "Diameter Base Accounting";
        CREDIT_CONTROL = 4, "Diameter Credit Control Application";
        RELAY = 0xffff_ffff, "Relay";
    }
}

wire_number! {
    /// An IANA enterprise number used as Vendor-Id (RFC 6733 §4.1).
    VendorId(u32) {
        IETF = 0, "IETF";
        TGPP = 10415, "3GPP";
    }
}

wire_number! {
    /// A Result-Code (RFC 6733 §7.1, RFC 4006 §9).
    ResultCode(u32) {
        SUCCESS = 2001, "DIAMETER_SUCCESS";
        LIMITED_SUCCESS = 2002, "DIAMETER_LIMITED_SUCCESS";
        COMMAND_UNSUPPORTED = 3001, "DIAMETER_COMMAND_UNSUPPORTED";
        UNABLE_TO_DELIVER = 3002, "DIAMETER_UNABLE_TO_DELIVER";
        REALM_NOT_SERVED = 3003, "DIAMETER_REALM_NOT_SERVED";
        TOO_BUSY = 3004, "DIAMETER_TOO_BUSY";
        LOOP_DETECTED = 3005, "DIAMETER_LOOP_DETECTED";
        REDIRECT_INDICATION = 3006, "DIAMETER_REDIRECT_INDICATION";
        APPLICATION_UNSUPPORTED = 3007, "DIAMETER_APPLICATION_UNSUPPORTED";
        INVALID_HDR_BITS = 3008, "DIAMETER_INVALID_HDR_BITS";
        INVALID_AVP_BITS = 3009, "DIAMETER_INVALID_AVP_BITS";
        UNKNOWN_PEER = 3010, "DIAMETER_UNKNOWN_PEER";
        AUTHENTICATION_REJECTED = 4001, "DIAMETER_AUTHENTICATION_REJECTED";
        OUT_OF_SPACE = 4002, "DIAMETER_OUT_OF_SPACE";
        ELECTION_LOST = 4003, "ELECTION_LOST";
        END_USER_SERVICE_DENIED = 4010, "DIAMETER_END_USER_SERVICE_DENIED";
        CREDIT_CONTROL_NOT_APPLICABLE = 4011, "DIAMETER_CREDIT_CONTROL_NOT_APPLICABLE";
        CREDIT_LIMIT_REACHED = 4012, "DIAMETER_CREDIT_LIMIT_REACHED";
        AVP_UNSUPPORTED = 5001, "DIAMETER_AVP_UNSUPPORTED";
        UNKNOWN_SESSION_ID = 5002, "DIAMETER_UNKNOWN_SESSION_ID";
        AUTHORIZATION_REJECTED = 5003, "DIAMETER_AUTHORIZATION_REJECTED";
        INVALID_AVP_VALUE = 5004, "DIAMETER_INVALID_AVP_VALUE";
        MISSING_AVP = 5005, "DIAMETER_MISSING_AVP";
        RESOURCES_EXCEEDED = 5006, "DIAMETER_RESOURCES_EXCEEDED";
        CONTRADICTING_AVPS = 5007, "DIAMETER_CONTRADICTING_AVPS";
        AVP_NOT_ALLOWED = 5008, "DIAMETER_AVP_NOT_ALLOWED";
        AVP_OCCURS_TOO_MANY_TIMES = 5009, "DIAMETER_AVP_OCCURS_TOO_MANY_TIMES";
        NO_COMMON_APPLICATION = 5010, "DIAMETER_NO_COMMON_APPLICATION";
        UNSUPPORTED_VERSION = 5011, "DIAMETER_UNSUPPORTED_VERSION";
        UNABLE_TO_COMPLY = 5012, "DIAMETER_UNABLE_TO_COMPLY";
        INVALID_BIT_IN_HEADER = 5013, "DIAMETER_INVALID_BIT_IN_HEADER";
        INVALID_AVP_LENGTH = 5014, "DIAMETER_INVALID_AVP_LENGTH";
        INVALID_MESSAGE_LENGTH = 5015, "DIAMETER_INVALID_MESSAGE_LENGTH";
        INVALID_AVP_BIT_COMBO = 5016, "DIAMETER_INVALID_AVP_BIT_COMBO";
        NO_COMMON_SECURITY = 5017, "DIAMETER_NO_COMMON_SECURITY";
        USER_UNKNOWN = 5030, "DIAMETER_USER_UNKNOWN";
        RATING_FAILED = 5031, "DIAMETER_RATING_FAILED";
    }
}

impl ResultCode {
    /// 3xxx protocol errors are answered with the E bit set (RFC 6733 §7.1.3).
    pub fn is_protocol_error(self) -> bool {
        (3000..4000).contains(&self.0)
    }

    /// 2xxx: the request succeeded.
    pub fn is_success(self) -> bool {
        (2000..3000).contains(&self.0)
    }
}

/// Command flags (RFC 6733 §3): R, P, E, T and four reserved bits, kept as received.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Flags(pub u8);

impl Flags {
    pub const REQUEST: u8 = 0x80;
    pub const PROXIABLE: u8 = 0x40;
    pub const ERROR: u8 = 0x20;
    pub const RETRANSMITTED: u8 = 0x10;
    pub const RESERVED: u8 = 0x0f;

    pub fn is_request(self) -> bool {
        self.0 & Self::REQUEST != 0
    }
    pub fn is_proxiable(self) -> bool {
        self.0 & Self::PROXIABLE != 0
    }
    pub fn is_error(self) -> bool {
        self.0 & Self::ERROR != 0
    }
    pub fn is_retransmitted(self) -> bool {
        self.0 & Self::RETRANSMITTED != 0
    }
    pub fn reserved(self) -> u8 {
        self.0 & Self::RESERVED
    }
    /// Returns a copy with `bit` set or cleared.
    pub fn with(self, bit: u8, on: bool) -> Self {
        if on {
            Flags(self.0 | bit)
        } else {
            Flags(self.0 & !bit)
        }
    }
}

impl fmt::Debug for Flags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self}")
    }
}

impl fmt::Display for Flags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let bit = |b: u8, c: char| if self.0 & b != 0 { c } else { '-' };
        write!(
            f,
            "{}{}{}{}",
            bit(Self::REQUEST, 'R'),
            bit(Self::PROXIABLE, 'P'),
            bit(Self::ERROR, 'E'),
            bit(Self::RETRANSMITTED, 'T')
        )
    }
}

/// The 20-octet message header.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Header {
    pub version: u8,
    /// Message Length: header plus all AVPs with their padding.
    pub length: u32,
    pub flags: Flags,
    pub command: CommandCode,
    pub application: ApplicationId,
    pub hop_by_hop: u32,
    pub end_to_end: u32,
}

impl Header {
    /// Reads the header fields from the first 20 octets without judging them, so that even a
    /// message we refuse can be answered with its own identifiers (RFC 6733 §7.2).
    pub fn read(buf: &[u8]) -> Option<Header> {
        let h: &[u8; HEADER_LEN] = buf.get(..HEADER_LEN)?.try_into().ok()?;
        let word = |i: usize| u32::from_be_bytes([h[i], h[i + 1], h[i + 2], h[i + 3]]);
        Some(Header {
            version: h[0],
            length: word(0) & 0x00ff_ffff,
            flags: Flags(h[4]),
            command: CommandCode(word(4) & 0x00ff_ffff),
            application: ApplicationId(word(8)),
            hop_by_hop: word(12),
            end_to_end: word(16),
        })
    }

    /// Checks the header on its own (RFC 6733 §3, §7.1): version, length and flag bits.
    /// `frame_len` is the number of octets the transport framed for this message.
    pub fn check(&self, frame_len: usize) -> Result<(), ProtocolError> {
        if self.version != VERSION {
            return Err(ProtocolError::UnsupportedVersion(self.version));
        }
        if (self.length as usize) < HEADER_LEN
            || !self.length.is_multiple_of(4)
            || self.length as usize != frame_len
        {
            return Err(ProtocolError::InvalidMessageLength {
                length: self.length,
                received: frame_len,
            });
        }
        if self.flags.reserved() != 0 {
            return Err(ProtocolError::InvalidBitInHeader(self.flags.0));
        }
        // §3: "E" is only for answers.
        if self.flags.is_request() && self.flags.is_error() {
            return Err(ProtocolError::InvalidHeaderBits {
                flags: self.flags.0,
                reason: "E bit set in a request",
            });
        }
        Ok(())
    }

    /// Writes the 20 header octets into `out[..20]`.
    pub fn write_into(&self, out: &mut [u8]) {
        let words = [
            (u32::from(self.version) << 24) | (self.length & 0x00ff_ffff),
            (u32::from(self.flags.0) << 24) | (self.command.0 & 0x00ff_ffff),
            self.application.0,
            self.hop_by_hop,
            self.end_to_end,
        ];
        for (chunk, w) in out.chunks_exact_mut(4).zip(words) {
            chunk.copy_from_slice(&w.to_be_bytes());
        }
    }

    /// Writes the 20 octets.
    pub fn write(&self, out: &mut impl BufMut) {
        let mut b = [0u8; HEADER_LEN];
        self.write_into(&mut b);
        out.put_slice(&b);
    }
}
