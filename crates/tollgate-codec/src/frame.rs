//! Telling a transport when a frame is whole (RFC 6733 §3; docs/architecture.md, "The path
//! of a CCR", step 1).

use crate::error::ProtocolError;
use crate::header::HEADER_LEN;

/// Looks at the start of a receive buffer. `Ok(None)`: not enough octets yet to know or to
/// hold the message. `Ok(Some(n))`: the first `n` octets are one whole message. `Err`: the
/// stream cannot be framed (length under 20, not a multiple of 4, or over `max_len`); the
/// transport should answer if it can and close, because the next frame's start is unknowable
/// (§3: the length "is always a multiple of 4"; §7.1.5). Refusing a length that is not a
/// multiple of 4 at once, rather than waiting for octets that may never come, keeps a broken
/// peer from holding the connection open.
pub fn check_frame(buf: &[u8], max_len: u32) -> Result<Option<usize>, ProtocolError> {
    if buf.len() < 4 {
        return Ok(None);
    }
    let length = u32::from_be_bytes([0, buf[1], buf[2], buf[3]]);
    if (length as usize) < HEADER_LEN {
        return Err(ProtocolError::InvalidMessageLength {
            length,
            received: buf.len(),
        });
    }
    if length > max_len {
        return Err(ProtocolError::MessageTooLarge {
            length,
            max: max_len,
        });
    }
    if !length.is_multiple_of(4) {
        return Err(ProtocolError::InvalidMessageLength {
            length,
            received: buf.len(),
        });
    }
    if buf.len() < length as usize {
        return Ok(None);
    }
    Ok(Some(length as usize))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames() {
        let mut m = vec![1, 0, 0, 24];
        m.resize(24, 0);
        assert_eq!(check_frame(&m[..3], 1024), Ok(None));
        assert_eq!(check_frame(&m[..23], 1024), Ok(None));
        assert_eq!(check_frame(&m, 1024), Ok(Some(24)));
        m.extend_from_slice(&[9, 9]);
        assert_eq!(check_frame(&m, 1024), Ok(Some(24)));
        assert_eq!(
            check_frame(&[1, 0, 0, 26], 1024)
                .unwrap_err()
                .result_code()
                .0,
            5015
        );
        assert_eq!(
            check_frame(&[1, 0, 0, 16], 1024)
                .unwrap_err()
                .result_code()
                .0,
            5015
        );
        // 16 MiB − 1: refused at once rather than buffered.
        assert!(matches!(
            check_frame(&[1, 0xff, 0xff, 0xff], 1 << 20),
            Err(ProtocolError::MessageTooLarge { .. })
        ));
    }
}
