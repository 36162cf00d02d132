//! Framing a TCP or TLS byte stream into Diameter messages with tokio-util, using the codec's
//! frame check (RFC 6733 §3: the 24-bit Message Length delimits messages on a stream).

use bytes::{Bytes, BytesMut};
use tokio_util::codec::{Decoder, Encoder};
use tollgate_codec::{check_frame, ProtocolError};

/// Splits a stream into whole frames; refuses lengths under 20 or over the maximum, after
/// which the stream cannot be resynchronised and the connection must close (§3).
#[derive(Debug, Clone)]
pub struct DiameterFramer {
    pub max_message_len: u32,
}

/// A framing failure: the protocol error (to answer if possible) or an I/O error.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("unframeable stream: {0}")]
    Protocol(ProtocolError, Option<tollgate_codec::Header>),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

impl Decoder for DiameterFramer {
    type Item = Bytes;
    type Error = FrameError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Bytes>, FrameError> {
        match check_frame(src, self.max_message_len) {
            Ok(Some(n)) => Ok(Some(src.split_to(n).freeze())),
            Ok(None) => {
                // Reserve for the announced frame so a large message costs one allocation.
                if src.len() >= 4 {
                    let want = u32::from_be_bytes([0, src[1], src[2], src[3]]) as usize;
                    src.reserve(want.saturating_sub(src.len()));
                }
                Ok(None)
            }
            Err(e) => Err(FrameError::Protocol(e, tollgate_codec::Header::read(src))),
        }
    }
}

impl Encoder<Bytes> for DiameterFramer {
    type Error = FrameError;

    fn encode(&mut self, item: Bytes, dst: &mut BytesMut) -> Result<(), FrameError> {
        dst.extend_from_slice(&item);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_split_at_every_byte_boundary_reassemble() {
        let mut msg = vec![1, 0, 0, 28, 0x80, 0, 1, 1];
        msg.resize(28, 7);
        let two: Vec<u8> = msg.iter().chain(msg.iter()).copied().collect();
        for cut in 0..two.len() {
            let mut f = DiameterFramer {
                max_message_len: 1024,
            };
            let mut buf = BytesMut::new();
            let mut got = Vec::new();
            for part in [&two[..cut], &two[cut..]] {
                buf.extend_from_slice(part);
                while let Some(fr) = f.decode(&mut buf).unwrap() {
                    got.push(fr);
                }
            }
            assert_eq!(got.len(), 2, "cut at {cut}");
            assert!(got.iter().all(|g| g.as_ref() == msg.as_slice()));
        }
    }

    #[test]
    fn oversized_length_is_refused_at_once() {
        let mut f = DiameterFramer {
            max_message_len: 1 << 16,
        };
        let mut buf = BytesMut::from(&[1u8, 0xff, 0xff, 0xfc, 0x80, 0, 1, 1][..]);
        assert!(matches!(f.decode(&mut buf), Err(FrameError::Protocol(..))));
    }
}
