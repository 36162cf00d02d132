//! tshark as the truth of the bytes: Diameter messages written to a pcap as one TCP stream on
//! loopback, dissected by Wireshark's Diameter dissector, and checked for malformed frames and
//! expert warnings. Used by the codec's encoder test, the python-diameter, Open5GS and Kamailio
//! suites.

use std::path::Path;
use std::process::Command;

/// Which end of the Diameter connection (port 3868) sent the messages: Wireshark reads
/// requests and answers the same way, but the stream direction is part of what it shows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sender {
    /// 127.0.0.1:40000 → 127.0.0.1:3868.
    Client,
    /// 127.0.0.1:3868 → 127.0.0.1:40000.
    Server,
}

const DIAMETER_PORT: u16 = 3868;
const CLIENT_PORT: u16 = 40000;

/// A pcap (libpcap, Ethernet) carrying `payloads` as consecutive segments of one TCP stream.
pub fn pcap(payloads: &[Vec<u8>], sender: Sender) -> Vec<u8> {
    let (src_port, dst_port, src_mac, dst_mac) = match sender {
        Sender::Client => (CLIENT_PORT, DIAMETER_PORT, 1u8, 2u8),
        Sender::Server => (DIAMETER_PORT, CLIENT_PORT, 2, 1),
    };
    let mut out = Vec::new();
    out.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
    out.extend_from_slice(&2u16.to_le_bytes());
    out.extend_from_slice(&4u16.to_le_bytes());
    out.extend_from_slice(&0i32.to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    out.extend_from_slice(&65535u32.to_le_bytes());
    out.extend_from_slice(&1u32.to_le_bytes()); // LINKTYPE_ETHERNET
    let mut seq: u32 = 1;
    for (i, p) in payloads.iter().enumerate() {
        let mut frame = vec![0, 0, 0, 0, 0, dst_mac, 0, 0, 0, 0, 0, src_mac, 0x08, 0x00];
        let total = u16::try_from(20 + 20 + p.len()).expect("a message fits one IPv4 packet");
        let mut ip = vec![
            0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, 6, 0, 0, 127, 0, 0, 1, 127, 0, 0, 1,
        ];
        ip[2..4].copy_from_slice(&total.to_be_bytes());
        let sum = ipv4_checksum(&ip);
        ip[10..12].copy_from_slice(&sum.to_be_bytes());
        frame.extend_from_slice(&ip);
        frame.extend_from_slice(&src_port.to_be_bytes());
        frame.extend_from_slice(&dst_port.to_be_bytes());
        frame.extend_from_slice(&seq.to_be_bytes());
        frame.extend_from_slice(&1u32.to_be_bytes());
        frame.extend_from_slice(&[0x50, 0x18, 0xff, 0xff, 0, 0, 0, 0]); // ACK|PSH, no checksum
        frame.extend_from_slice(p);
        seq = seq.wrapping_add(u32::try_from(p.len()).expect("a message under 4 GiB"));
        let len = u32::try_from(frame.len()).expect("a frame under 4 GiB");
        let ts = 1_700_000_000u32.wrapping_add(u32::try_from(i).unwrap_or(u32::MAX));
        out.extend_from_slice(&ts.to_le_bytes());
        out.extend_from_slice(&0u32.to_le_bytes());
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&frame);
    }
    out
}

/// RFC 791's header checksum.
fn ipv4_checksum(header: &[u8]) -> u16 {
    let mut s: u32 = header
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], c.get(1).copied().unwrap_or(0)])))
        .sum();
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    !u16::try_from(s).unwrap_or(u16::MAX)
}

/// Writes `payloads` to `pcap_path` and dissects them with `tshark -V`, asserting Wireshark
/// agrees with the encoding: one "Diameter Protocol" per message, nothing malformed, no
/// expert info at warning or error level. Returns the dissection for further checks, or
/// `None` when tshark is missing and the run allows that ([`crate::present`]).
pub fn dissects_cleanly(payloads: &[Vec<u8>], sender: Sender, pcap_path: &Path) -> Option<String> {
    if !crate::present(
        crate::runs("tshark", &["--version"]),
        "tshark",
        "apt-get install tshark",
    ) {
        return None;
    }
    std::fs::write(pcap_path, pcap(payloads, sender))
        .unwrap_or_else(|e| panic!("{}: {e}", pcap_path.display()));
    let out = Command::new("tshark")
        .args(["-n", "-r"])
        .arg(pcap_path)
        .args(["-V", "-d", "tcp.port==3868,diameter", "-Y", "diameter"])
        .output()
        .unwrap_or_else(|e| panic!("tshark: {e}"));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "tshark failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        text.matches("Diameter Protocol").count(),
        payloads.len(),
        "every message is dissected as Diameter:\n{text}"
    );
    assert!(!text.contains("Malformed"), "malformed frame:\n{text}");
    for line in text.lines().filter(|l| l.contains("Expert Info")) {
        assert!(
            !line.contains("Error") && !line.contains("Warning"),
            "expert info: {line}\n{text}"
        );
    }
    Some(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ip_checksum_of_a_header_with_its_checksum_is_zero() {
        let p = pcap(&[vec![1, 0, 0, 20]], Sender::Server);
        // 24 octets of file header, 16 of record header, 14 of Ethernet: then the IP header.
        let ip = &p[24 + 16 + 14..24 + 16 + 14 + 20];
        assert_eq!(ipv4_checksum(ip), 0);
        // Ports say who sent it.
        assert_eq!(
            &p[24 + 16 + 14 + 20..24 + 16 + 14 + 22],
            &3868u16.to_be_bytes()
        );
    }
}
