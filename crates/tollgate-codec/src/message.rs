//! Whole messages: decode a frame into a header and its top-level AVPs, encode them back,
//! and build requests and answers.
//!
//! Decoding is structural and dictionary-free: it checks the header (§3), then walks the
//! top-level AVPs checking every length (§4.1). Grouped payloads stay as slices until someone
//! asks for their members, so a proxy-sized Proxy-Info costs nothing to pass through; the
//! dictionary's validation ([`crate::Dictionary::validate`]) walks the whole tree with depth
//! and count limits.

use crate::avp::{Avp, AvpCode};
use crate::codes;
use crate::error::{DecodeError, ProtocolError};
use crate::header::{ApplicationId, CommandCode, Flags, Header, ResultCode, HEADER_LEN, VERSION};
use bytes::{Bytes, BytesMut};

/// Bounds on what a peer may make us parse (docs/architecture.md, "Limits and defaults"): each is a config field upstream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Largest Message Length accepted by the frame check.
    pub max_message_len: u32,
    /// Most AVPs in one message, grouped members included.
    pub max_avps: usize,
    /// Deepest nesting of Grouped AVPs.
    pub max_depth: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_message_len: 1 << 20,
            max_avps: 2048,
            max_depth: 16,
        }
    }
}

/// A Diameter message: header and top-level AVPs in wire order.
#[derive(Clone, Debug, PartialEq)]
pub struct Message {
    pub header: Header,
    pub avps: Vec<Avp>,
}

impl Message {
    /// Decodes one whole frame (exactly one message: use [`crate::check_frame`] to split a
    /// stream) with the default limits.
    pub fn decode(frame: &Bytes) -> Result<Message, DecodeError> {
        Self::decode_with(frame, &Limits::default())
    }

    /// Decodes one whole frame. The header is read first, so every error after it carries
    /// the header for the answer (docs/architecture.md, "The path of a CCR", step 2).
    pub fn decode_with(frame: &Bytes, limits: &Limits) -> Result<Message, DecodeError> {
        let Some(header) = Header::read(frame) else {
            return Err(DecodeError {
                header: None,
                error: ProtocolError::InvalidMessageLength {
                    length: 0,
                    received: frame.len(),
                },
            });
        };
        let fail = |error| DecodeError {
            header: Some(header),
            error,
        };
        if header.length > limits.max_message_len {
            return Err(fail(ProtocolError::MessageTooLarge {
                length: header.length,
                max: limits.max_message_len,
            }));
        }
        header.check(frame.len()).map_err(fail)?;
        // A guess from the length avoids regrowth: top-level AVPs of a CCR average well over
        // 32 octets (grouped ones are big), and a vector under ~1 KiB stays on the
        // allocator's per-thread fast path, which a larger guess (/16) fell off.
        let mut avps = Vec::with_capacity(((frame.len() - HEADER_LEN) / 32).clamp(4, 64));
        let mut pos = HEADER_LEN;
        while pos < frame.len() {
            if avps.len() >= limits.max_avps {
                return Err(fail(ProtocolError::TooManyAvps {
                    limit: limits.max_avps,
                }));
            }
            avps.push(Avp::read(frame, &mut pos).map_err(fail)?);
        }
        Ok(Message { header, avps })
    }

    /// Octets the encoded message takes.
    pub fn wire_len(&self) -> usize {
        HEADER_LEN + self.avps.iter().map(Avp::wire_len).sum::<usize>()
    }

    /// Encodes the message, computing Message Length from the AVPs.
    pub fn encode(&self, out: &mut BytesMut) {
        let len = self.wire_len();
        let header = Header {
            version: VERSION,
            length: len as u32,
            ..self.header
        };
        // Size the output once (zeroed, which also writes every AVP's padding) and fill it
        // by position: one capacity check instead of one per field.
        let start = out.len();
        out.resize(start + len, 0);
        let buf = &mut out[start..];
        header.write_into(&mut buf[..HEADER_LEN]);
        let mut pos = HEADER_LEN;
        for a in &self.avps {
            pos += a.write_into(&mut buf[pos..]);
        }
    }

    pub fn to_bytes(&self) -> Bytes {
        let mut b = BytesMut::with_capacity(self.wire_len());
        self.encode(&mut b);
        b.freeze()
    }

    /// A new request with zeroed identifiers (the peer layer assigns them).
    pub fn request(command: CommandCode, application: ApplicationId, proxiable: bool) -> Message {
        let mut flags = Flags(Flags::REQUEST);
        if proxiable {
            flags = flags.with(Flags::PROXIABLE, true);
        }
        Message {
            header: Header {
                version: VERSION,
                length: 0,
                flags,
                command,
                application,
                hop_by_hop: 0,
                end_to_end: 0,
            },
            avps: Vec::with_capacity(16),
        }
    }

    /// The skeleton of an answer to `request` (§6.2): same command, application and
    /// identifiers, P copied, R cleared; Session-Id first when the request had one.
    pub fn answer_to(request: &Message) -> Message {
        let h = request.header;
        let mut m = Message {
            header: Header {
                version: VERSION,
                length: 0,
                flags: Flags(h.flags.0 & Flags::PROXIABLE),
                ..h
            },
            avps: Vec::with_capacity(16),
        };
        if let Some(s) = request.find(codes::SESSION_ID) {
            m.avps.push(s.clone());
        }
        m
    }

    /// An answer reporting `error` (§7.2–§7.5), for a request whose header is known: E bit
    /// for 3xxx protocol errors, Result-Code, Error-Message, Failed-AVP where the error has
    /// one, Session-Id when it could be read. Proxy-Info is echoed by the caller, which may
    /// know more of the request.
    pub fn error_answer(
        request: &Header,
        session_id: Option<&Avp>,
        error: &ProtocolError,
        origin_host: &str,
        origin_realm: &str,
    ) -> Message {
        let code = error.result_code();
        let mut flags = Flags(request.flags.0 & Flags::PROXIABLE);
        if code.is_protocol_error() {
            flags = flags.with(Flags::ERROR, true);
        }
        let mut m = Message {
            header: Header {
                version: VERSION,
                length: 0,
                flags,
                ..*request
            },
            avps: Vec::with_capacity(6),
        };
        if let Some(s) = session_id {
            m.avps.push(s.clone());
        }
        m.push(Avp::from_str(codes::ORIGIN_HOST, origin_host));
        m.push(Avp::from_str(codes::ORIGIN_REALM, origin_realm));
        m.push(Avp::from_u32(codes::RESULT_CODE, code.0));
        m.push(Avp::from_str(codes::ERROR_MESSAGE, &error.to_string()));
        if let Some(f) = error.failed_avp() {
            m.push(f);
        }
        m
    }

    pub fn push(&mut self, avp: Avp) -> &mut Self {
        self.avps.push(avp);
        self
    }

    /// Builder form of [`Message::push`].
    pub fn with(mut self, avp: Avp) -> Self {
        self.avps.push(avp);
        self
    }

    /// The first top-level AVP of this kind.
    pub fn find(&self, code: AvpCode) -> Option<&Avp> {
        self.avps.iter().find(|a| a.is(code))
    }

    /// Every top-level AVP of this kind, in order.
    pub fn find_all(&self, code: AvpCode) -> impl Iterator<Item = &Avp> {
        self.avps.iter().filter(move |a| a.is(code))
    }

    pub fn is_request(&self) -> bool {
        self.header.flags.is_request()
    }

    /// Session-Id as text, if present and valid UTF-8.
    pub fn session_id(&self) -> Option<&str> {
        self.find(codes::SESSION_ID).and_then(|a| a.utf8().ok())
    }

    pub fn origin_host(&self) -> Option<&str> {
        self.find(codes::ORIGIN_HOST).and_then(|a| a.utf8().ok())
    }

    pub fn origin_realm(&self) -> Option<&str> {
        self.find(codes::ORIGIN_REALM).and_then(|a| a.utf8().ok())
    }

    /// Result-Code of an answer, if present and well formed.
    pub fn result_code(&self) -> Option<ResultCode> {
        self.find(codes::RESULT_CODE)
            .and_then(|a| a.u32().ok())
            .map(ResultCode)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ccr() -> Message {
        Message::request(
            CommandCode::CREDIT_CONTROL,
            ApplicationId::CREDIT_CONTROL,
            true,
        )
        .with(Avp::from_str(codes::SESSION_ID, "client;1;2"))
        .with(Avp::from_str(codes::ORIGIN_HOST, "client.example"))
        .with(Avp::from_u32(codes::CC_REQUEST_NUMBER, 0))
    }

    #[test]
    fn round_trip() {
        let b = ccr().to_bytes();
        let m = Message::decode(&b).unwrap();
        assert_eq!(m.header.length as usize, b.len());
        assert_eq!(m.session_id(), Some("client;1;2"));
        assert_eq!(m.to_bytes(), b);
    }

    #[test]
    fn short_frame_is_5015_without_header() {
        let e = Message::decode(&Bytes::from_static(&[1, 0, 0])).unwrap_err();
        assert_eq!(e.result_code().0, 5015);
        assert!(e.header.is_none());
    }

    #[test]
    fn bad_version_is_5011_with_header() {
        let mut b = BytesMut::from(ccr().to_bytes().as_ref());
        b[0] = 2;
        let e = Message::decode(&b.freeze()).unwrap_err();
        assert_eq!(e.result_code().0, 5011);
        assert!(e.header.is_some());
    }

    #[test]
    fn length_mismatch_is_5015() {
        let b = ccr().to_bytes();
        let e = Message::decode(&b.slice(..b.len() - 4)).unwrap_err();
        assert_eq!(e.result_code().0, 5015);
        let mut odd = BytesMut::from(b.as_ref());
        odd[3] = odd[3].wrapping_add(2);
        assert_eq!(
            Message::decode(&odd.freeze()).unwrap_err().result_code().0,
            5015
        );
    }

    #[test]
    fn reserved_header_bit_is_5013_and_e_in_request_is_3008() {
        let b = ccr().to_bytes();
        let mut r = BytesMut::from(b.as_ref());
        r[4] |= 0x01;
        assert_eq!(
            Message::decode(&r.freeze()).unwrap_err().result_code().0,
            5013
        );
        let mut e = BytesMut::from(b.as_ref());
        e[4] |= Flags::ERROR;
        let err = Message::decode(&e.freeze()).unwrap_err();
        assert_eq!(err.result_code().0, 3008);
        assert_eq!(err.header.unwrap().hop_by_hop, 0);
    }

    #[test]
    fn avp_past_the_end_is_5014_with_its_header() {
        let b = ccr().to_bytes();
        let mut m = BytesMut::from(b.as_ref());
        // Session-Id AVP length → 0xfff (past the end).
        m[HEADER_LEN + 6] = 0x0f;
        let e = Message::decode(&m.freeze()).unwrap_err();
        assert_eq!(e.result_code().0, 5014);
        assert_eq!(e.error.offending_avp().unwrap().code, 263);
    }

    #[test]
    fn avp_length_under_header_is_5014() {
        let b = ccr().to_bytes();
        let mut m = BytesMut::from(b.as_ref());
        m[HEADER_LEN + 7] = 4;
        m[HEADER_LEN + 6] = 0;
        assert_eq!(
            Message::decode(&m.freeze()).unwrap_err().result_code().0,
            5014
        );
    }

    #[test]
    fn too_many_avps_is_refused() {
        let mut m = ccr();
        for _ in 0..20 {
            m.push(Avp::from_u32(codes::RATING_GROUP, 1));
        }
        let limits = Limits {
            max_avps: 10,
            ..Limits::default()
        };
        let e = Message::decode_with(&m.to_bytes(), &limits).unwrap_err();
        assert_eq!(e.error, ProtocolError::TooManyAvps { limit: 10 });
    }

    #[test]
    fn error_answer_sets_e_only_for_protocol_errors() {
        let req = ccr();
        let e3007 = ProtocolError::ApplicationUnsupported(ApplicationId(5));
        let a = Message::error_answer(&req.header, req.find(codes::SESSION_ID), &e3007, "h", "r");
        assert!(a.header.flags.is_error());
        assert!(!a.header.flags.is_request());
        assert_eq!(a.result_code(), Some(ResultCode::APPLICATION_UNSUPPORTED));
        let avp = Avp::from_u32(AvpCode::base(99999), 0);
        let e5001 = ProtocolError::AvpUnsupported { avp: avp.clone() };
        let a = Message::error_answer(&req.header, None, &e5001, "h", "r");
        assert!(!a.header.flags.is_error());
        let failed = a.find(codes::FAILED_AVP).unwrap().members().unwrap();
        assert_eq!(failed, vec![avp]);
    }
}
