//! AVPs (RFC 6733 §4): header, raw payload and typed access.
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                           AVP Code                            |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |V M P r r r r r|                  AVP Length                   |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                        Vendor-ID (opt)                        |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |    Data ...
//! +-+-+-+-+-+-+-+-+
//! ```
//! AVP Length covers header and data but not the 0–3 padding octets that follow (§4.1).

use crate::error::ProtocolError;
use crate::types::{Address, Time};
use bytes::{BufMut, Bytes, BytesMut};
use std::fmt;

/// AVP flags (§4.1): V (vendor id present), M (mandatory), P (reserved since RFC 6733) and
/// five reserved bits, kept as received.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct AvpFlags(pub u8);

impl AvpFlags {
    pub const VENDOR: u8 = 0x80;
    pub const MANDATORY: u8 = 0x40;
    pub const PROTECTED: u8 = 0x20;
    pub const RESERVED: u8 = 0x1f;

    pub fn is_vendor(self) -> bool {
        self.0 & Self::VENDOR != 0
    }
    pub fn is_mandatory(self) -> bool {
        self.0 & Self::MANDATORY != 0
    }
    pub fn is_protected(self) -> bool {
        self.0 & Self::PROTECTED != 0
    }
}

impl fmt::Display for AvpFlags {
    /// Wireshark's notation: `VMP` with `-` for a clear bit.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let bit = |b: u8, c: char| if self.0 & b != 0 { c } else { '-' };
        write!(
            f,
            "{}{}{}",
            bit(Self::VENDOR, 'V'),
            bit(Self::MANDATORY, 'M'),
            bit(Self::PROTECTED, 'P')
        )
    }
}

impl fmt::Debug for AvpFlags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self}")
    }
}

/// Identifies an AVP definition: code and vendor (0 for IETF AVPs), plus the M bit we set
/// when we send it. Two AVPs are the same kind when code and vendor match.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct AvpCode {
    pub code: u32,
    pub vendor: u32,
    pub mandatory: bool,
}

impl AvpCode {
    pub const fn new(code: u32, vendor: u32, mandatory: bool) -> Self {
        AvpCode {
            code,
            vendor,
            mandatory,
        }
    }
    /// An IETF AVP (no vendor) with the M bit set.
    pub const fn base(code: u32) -> Self {
        Self::new(code, 0, true)
    }
    /// A 3GPP (vendor 10415) AVP with the M bit set.
    pub const fn tgpp(code: u32) -> Self {
        Self::new(code, 10415, true)
    }
    /// The same AVP sent without the M bit.
    pub const fn optional(self) -> Self {
        Self::new(self.code, self.vendor, false)
    }
    fn flags(self) -> AvpFlags {
        let mut f = 0;
        if self.vendor != 0 {
            f |= AvpFlags::VENDOR;
        }
        if self.mandatory {
            f |= AvpFlags::MANDATORY;
        }
        AvpFlags(f)
    }
}

/// One AVP. `data` is the payload without padding; for a decoded AVP it is a slice of the
/// received frame, so decoding copies nothing.
#[derive(Clone, PartialEq, Eq)]
pub struct Avp {
    pub code: u32,
    pub flags: AvpFlags,
    /// Meaningful only when the V flag is set.
    pub vendor_id: u32,
    pub data: Bytes,
}

impl fmt::Debug for Avp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Avp({}", self.code)?;
        if self.flags.is_vendor() {
            write!(f, "/v{}", self.vendor_id)?;
        }
        write!(f, " {} {:02x?})", self.flags, self.data.as_ref())
    }
}

/// Length of an AVP header: 8 octets, 12 with a Vendor-ID.
pub fn header_len(flags: AvpFlags) -> usize {
    if flags.is_vendor() {
        12
    } else {
        8
    }
}

/// Rounds a length up to the next multiple of 4 (§4.1 padding).
pub const fn padded(len: usize) -> usize {
    (len + 3) & !3
}

/// Maximum value of the 24-bit AVP Length field.
const MAX_AVP_LEN: usize = 0x00ff_ffff;

impl Avp {
    pub fn new(code: AvpCode, data: impl Into<Bytes>) -> Avp {
        Avp {
            code: code.code,
            flags: code.flags(),
            vendor_id: code.vendor,
            data: data.into(),
        }
    }

    /// The vendor of this AVP: the Vendor-ID if V is set, else 0 (IETF).
    pub fn vendor(&self) -> u32 {
        if self.flags.is_vendor() {
            self.vendor_id
        } else {
            0
        }
    }

    /// Whether this AVP is of the given kind (code and vendor).
    pub fn is(&self, code: AvpCode) -> bool {
        self.code == code.code && self.vendor() == code.vendor
    }

    /// The AVP Length field: header plus data, without padding.
    pub fn len(&self) -> usize {
        header_len(self.flags) + self.data.len()
    }

    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// Octets this AVP takes on the wire, with padding.
    pub fn wire_len(&self) -> usize {
        padded(self.len())
    }

    /// Writes header, data and padding. AVP Length is 24 bits; a payload longer than that
    /// cannot be built from decoded input (a message is at most 2^24 octets) and is clamped.
    pub fn encode(&self, out: &mut impl BufMut) {
        let len = self.len().min(MAX_AVP_LEN);
        out.put_u32(self.code);
        out.put_u32((u32::from(self.flags.0) << 24) | len as u32);
        if self.flags.is_vendor() {
            out.put_u32(self.vendor_id);
        }
        out.put_slice(&self.data);
        out.put_bytes(0, padded(len) - len);
    }

    /// Writes header and data at the start of `out`, which is at least [`Avp::wire_len`]
    /// long and zeroed (the padding is left as it is); returns the octets taken with padding.
    pub fn write_into(&self, out: &mut [u8]) -> usize {
        let len = self.len().min(MAX_AVP_LEN);
        out[..4].copy_from_slice(&self.code.to_be_bytes());
        out[4..8].copy_from_slice(&((u32::from(self.flags.0) << 24) | len as u32).to_be_bytes());
        let mut at = 8;
        if self.flags.is_vendor() {
            out[8..12].copy_from_slice(&self.vendor_id.to_be_bytes());
            at = 12;
        }
        let data = &self.data[..len - at];
        out[at..len].copy_from_slice(data);
        padded(len)
    }

    /// Reads one AVP from `buf` at `*pos` (the caller's whole message or group payload),
    /// checking that its header and declared length fit (§4.1). Advances `*pos` past padding.
    pub fn read(buf: &Bytes, pos: &mut usize) -> Result<Avp, ProtocolError> {
        let start = *pos;
        let r = AvpRef::read(buf, pos)?;
        let hlen = header_len(r.flags);
        Ok(Avp {
            code: r.code,
            flags: r.flags,
            vendor_id: r.vendor_id,
            data: buf.slice(start + hlen..start + hlen + r.data.len()),
        })
    }

    /// A borrowed view of this AVP.
    pub fn as_ref(&self) -> AvpRef<'_> {
        AvpRef {
            code: self.code,
            flags: self.flags,
            vendor_id: self.vendor_id,
            data: &self.data,
        }
    }

    fn fixed<const N: usize>(&self) -> Result<[u8; N], ProtocolError> {
        self.data
            .as_ref()
            .try_into()
            .map_err(|_| self.length_error(N))
    }

    /// The 5014 error for this AVP, with a zeroed payload of the expected size (§7.5).
    pub fn length_error(&self, expected: usize) -> ProtocolError {
        self.as_ref().length_error(expected)
    }

    pub fn u32(&self) -> Result<u32, ProtocolError> {
        self.fixed::<4>().map(u32::from_be_bytes)
    }
    pub fn i32(&self) -> Result<i32, ProtocolError> {
        self.fixed::<4>().map(i32::from_be_bytes)
    }
    pub fn u64(&self) -> Result<u64, ProtocolError> {
        self.fixed::<8>().map(u64::from_be_bytes)
    }
    pub fn i64(&self) -> Result<i64, ProtocolError> {
        self.fixed::<8>().map(i64::from_be_bytes)
    }
    pub fn f32(&self) -> Result<f32, ProtocolError> {
        self.fixed::<4>().map(f32::from_be_bytes)
    }
    pub fn f64(&self) -> Result<f64, ProtocolError> {
        self.fixed::<8>().map(f64::from_be_bytes)
    }
    /// Enumerated is an Integer32 (§4.3.1).
    pub fn enumerated(&self) -> Result<i32, ProtocolError> {
        self.i32()
    }
    pub fn octets(&self) -> &Bytes {
        &self.data
    }
    /// UTF8String, DiameterIdentity, DiameterURI, IPFilterRule: validated UTF-8 (§4.3.1).
    pub fn utf8(&self) -> Result<&str, ProtocolError> {
        std::str::from_utf8(&self.data).map_err(|_| ProtocolError::InvalidAvpValue {
            avp: self.clone(),
            reason: "not valid UTF-8",
        })
    }
    pub fn time(&self) -> Result<Time, ProtocolError> {
        self.u32().map(Time)
    }
    pub fn address(&self) -> Result<Address, ProtocolError> {
        Address::parse(&self.data).ok_or_else(|| self.length_error(6))
    }

    /// The members of a Grouped AVP (§4.4), one level deep; each is a slice of this payload.
    pub fn members(&self) -> Result<Vec<Avp>, ProtocolError> {
        let mut out = Vec::with_capacity(4);
        let mut pos = 0;
        while pos < self.data.len() {
            out.push(Avp::read(&self.data, &mut pos).map_err(|e| e.within(&self.as_ref()))?);
        }
        Ok(out)
    }

    /// The first member of a Grouped AVP of the given kind.
    pub fn member(&self, code: AvpCode) -> Result<Option<Avp>, ProtocolError> {
        let mut pos = 0;
        while pos < self.data.len() {
            let a = Avp::read(&self.data, &mut pos).map_err(|e| e.within(&self.as_ref()))?;
            if a.is(code) {
                return Ok(Some(a));
            }
        }
        Ok(None)
    }

    pub fn from_u32(code: AvpCode, v: u32) -> Avp {
        Avp::new(code, Bytes::copy_from_slice(&v.to_be_bytes()))
    }
    pub fn from_i32(code: AvpCode, v: i32) -> Avp {
        Avp::new(code, Bytes::copy_from_slice(&v.to_be_bytes()))
    }
    pub fn from_u64(code: AvpCode, v: u64) -> Avp {
        Avp::new(code, Bytes::copy_from_slice(&v.to_be_bytes()))
    }
    pub fn from_i64(code: AvpCode, v: i64) -> Avp {
        Avp::new(code, Bytes::copy_from_slice(&v.to_be_bytes()))
    }
    pub fn from_f32(code: AvpCode, v: f32) -> Avp {
        Avp::new(code, Bytes::copy_from_slice(&v.to_be_bytes()))
    }
    pub fn from_f64(code: AvpCode, v: f64) -> Avp {
        Avp::new(code, Bytes::copy_from_slice(&v.to_be_bytes()))
    }
    pub fn from_enum(code: AvpCode, v: i32) -> Avp {
        Avp::from_i32(code, v)
    }
    pub fn from_str(code: AvpCode, v: &str) -> Avp {
        Avp::new(code, Bytes::copy_from_slice(v.as_bytes()))
    }
    pub fn from_time(code: AvpCode, t: Time) -> Avp {
        Avp::from_u32(code, t.0)
    }
    pub fn from_address(code: AvpCode, a: &Address) -> Avp {
        let mut b = BytesMut::with_capacity(18);
        a.write(&mut b);
        Avp::new(code, b.freeze())
    }
    /// A Grouped AVP whose payload is the members, encoded with their padding.
    pub fn grouped(code: AvpCode, members: &[Avp]) -> Avp {
        let mut b = BytesMut::with_capacity(members.iter().map(Avp::wire_len).sum());
        for m in members {
            m.encode(&mut b);
        }
        Avp::new(code, b.freeze())
    }
}

/// A borrowed AVP: the same fields as [`Avp`] with the payload as a slice, so walking a
/// grouped tree (validation, lookups) costs no allocation and no reference counting. Errors
/// copy the offending AVP out, since answers outlive the frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AvpRef<'a> {
    pub code: u32,
    pub flags: AvpFlags,
    pub vendor_id: u32,
    pub data: &'a [u8],
}

impl<'a> AvpRef<'a> {
    /// Reads one AVP header and payload at `*pos`, checking lengths (§4.1), and advances
    /// past the padding (a missing final pad at the very end is tolerated).
    pub fn read(buf: &'a [u8], pos: &mut usize) -> Result<AvpRef<'a>, BadLength> {
        let rest = buf.get(*pos..).unwrap_or_default();
        if rest.len() < 8 {
            // Not even an AVP header: report what we can see as the offending AVP.
            let code = match rest {
                [a, b, c, d, ..] => u32::from_be_bytes([*a, *b, *c, *d]),
                _ => 0,
            };
            return Err(BadLength {
                code,
                flags: AvpFlags(0),
                vendor_id: 0,
            });
        }
        let code = u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]);
        // One aligned 32-bit read for flags and the 24-bit length: assembling the length
        // from three bytes and a zero made the compiler stall on store forwarding.
        let word = u32::from_be_bytes([rest[4], rest[5], rest[6], rest[7]]);
        let flags = AvpFlags((word >> 24) as u8);
        let len = (word & 0x00ff_ffff) as usize;
        let hlen = header_len(flags);
        let vendor_id = if flags.is_vendor() && rest.len() >= 12 {
            u32::from_be_bytes([rest[8], rest[9], rest[10], rest[11]])
        } else {
            0
        };
        if len < hlen || len > rest.len() {
            return Err(BadLength {
                code,
                flags,
                vendor_id,
            });
        }
        let data = &rest[hlen..len];
        *pos = (*pos + padded(len)).min(buf.len());
        Ok(AvpRef {
            code,
            flags,
            vendor_id,
            data,
        })
    }

    pub fn vendor(&self) -> u32 {
        if self.flags.is_vendor() {
            self.vendor_id
        } else {
            0
        }
    }

    pub fn is(&self, code: AvpCode) -> bool {
        self.code == code.code && self.vendor() == code.vendor
    }

    /// A copy that owns its payload.
    pub fn to_owned(&self) -> Avp {
        Avp {
            code: self.code,
            flags: self.flags,
            vendor_id: self.vendor_id,
            data: Bytes::copy_from_slice(self.data),
        }
    }

    /// The 5014 error for this AVP, with a zeroed payload of the expected size (§7.5).
    pub fn length_error(&self, expected: usize) -> ProtocolError {
        ProtocolError::InvalidAvpLength {
            avp: Avp {
                code: self.code,
                flags: self.flags,
                vendor_id: self.vendor_id,
                data: Bytes::from(vec![0u8; expected]),
            },
        }
    }

    pub fn u32(&self) -> Result<u32, ProtocolError> {
        <[u8; 4]>::try_from(self.data)
            .map(u32::from_be_bytes)
            .map_err(|_| self.length_error(4))
    }

    pub fn i32(&self) -> Result<i32, ProtocolError> {
        self.u32().map(|v| v as i32)
    }

    pub fn utf8(&self) -> Result<&'a str, ProtocolError> {
        std::str::from_utf8(self.data).map_err(|_| ProtocolError::InvalidAvpValue {
            avp: self.to_owned(),
            reason: "not valid UTF-8",
        })
    }

    /// Checks an Address payload (§4.3.1): family, and 4 or 16 octets for IPv4/IPv6.
    pub fn check_address(&self) -> Result<(), ProtocolError> {
        match self.data {
            [0, 1, rest @ ..] if rest.len() == 4 => Ok(()),
            [0, 2, rest @ ..] if rest.len() == 16 => Ok(()),
            [0, 1, ..] | [0, 2, ..] => Err(self.length_error(6)),
            [_, _, ..] => Ok(()),
            _ => Err(self.length_error(6)),
        }
    }

    /// The members of a Grouped AVP, one level deep.
    pub fn members(&self) -> Members<'a> {
        Members {
            buf: self.data,
            pos: 0,
        }
    }
}

/// An AVP whose length does not fit (§4.1). Kept small so the hot decoding loop moves
/// `Result<AvpRef, BadLength>` in registers; it becomes a [`ProtocolError`] at the edge.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BadLength {
    pub code: u32,
    pub flags: AvpFlags,
    pub vendor_id: u32,
}

impl From<BadLength> for ProtocolError {
    /// §7.5: Failed-AVP for a bad length carries the AVP header and a zeroed minimum
    /// payload; the validator, which knows the type, sizes the payload.
    fn from(b: BadLength) -> Self {
        ProtocolError::InvalidAvpLength {
            avp: Avp {
                code: b.code,
                flags: b.flags,
                vendor_id: b.vendor_id,
                data: Bytes::new(),
            },
        }
    }
}

/// Iterator over the members of a Grouped AVP payload.
pub struct Members<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Iterator for Members<'a> {
    type Item = Result<AvpRef<'a>, BadLength>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.pos >= self.buf.len() {
            return None;
        }
        let r = AvpRef::read(self.buf, &mut self.pos);
        if r.is_err() {
            // Stop after an error: the rest of the payload cannot be trusted.
            self.pos = self.buf.len();
        }
        Some(r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_context_id_matches_the_spec_example() {
        // diameter-ro.md §1.3: length 22 + 2 padding octets.
        let a = Avp::from_str(AvpCode::base(461), "32260@3gpp.org");
        let mut b = BytesMut::new();
        a.encode(&mut b);
        assert_eq!(&b[..8], &[0, 0, 1, 0xcd, 0x40, 0, 0, 0x16]);
        assert_eq!(b.len(), 24);
        assert_eq!(&b[22..], &[0, 0]);
    }

    #[test]
    fn role_of_node_matches_the_spec_example() {
        let a = Avp::from_enum(AvpCode::tgpp(829), 0);
        let mut b = BytesMut::new();
        a.encode(&mut b);
        assert_eq!(
            b.as_ref(),
            &[0, 0, 3, 0x3d, 0xc0, 0, 0, 0x10, 0, 0, 0x28, 0xaf, 0, 0, 0, 0]
        );
    }

    #[test]
    fn wrong_length_for_unsigned32_is_5014_with_a_zeroed_payload() {
        let a = Avp::new(AvpCode::base(415), Bytes::from_static(&[1, 2]));
        let e = a.u32().unwrap_err();
        assert_eq!(e.result_code().0, 5014);
        assert_eq!(e.offending_avp().unwrap().data.as_ref(), &[0, 0, 0, 0]);
    }

    #[test]
    fn invalid_utf8_is_5004() {
        let a = Avp::new(AvpCode::base(1), Bytes::from_static(&[0xff, 0xfe]));
        assert_eq!(a.utf8().unwrap_err().result_code().0, 5004);
    }
}
