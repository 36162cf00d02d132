//! Value types of the derived AVP data formats (RFC 6733 §4.3) that are more than a number
//! or a string: Address and Time.

use bytes::{BufMut, Bytes};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Address (§4.3.1): a 2-octet IANA address family followed by the address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Address {
    V4(Ipv4Addr),
    V6(Ipv6Addr),
    /// Any other family (e.g. 8 = E.164), kept as raw octets.
    Other {
        family: u16,
        address: Bytes,
    },
}

impl Address {
    pub const FAMILY_IPV4: u16 = 1;
    pub const FAMILY_IPV6: u16 = 2;

    /// Parses the payload of an Address AVP; `None` when the length does not fit the family.
    pub fn parse(data: &Bytes) -> Option<Address> {
        let family = u16::from_be_bytes([*data.first()?, *data.get(1)?]);
        let rest = data.slice(2..);
        match family {
            Self::FAMILY_IPV4 => {
                let o: [u8; 4] = rest.as_ref().try_into().ok()?;
                Some(Address::V4(Ipv4Addr::from(o)))
            }
            Self::FAMILY_IPV6 => {
                let o: [u8; 16] = rest.as_ref().try_into().ok()?;
                Some(Address::V6(Ipv6Addr::from(o)))
            }
            family => Some(Address::Other {
                family,
                address: rest,
            }),
        }
    }

    pub fn family(&self) -> u16 {
        match self {
            Address::V4(_) => Self::FAMILY_IPV4,
            Address::V6(_) => Self::FAMILY_IPV6,
            Address::Other { family, .. } => *family,
        }
    }

    pub fn write(&self, out: &mut impl BufMut) {
        out.put_u16(self.family());
        match self {
            Address::V4(a) => out.put_slice(&a.octets()),
            Address::V6(a) => out.put_slice(&a.octets()),
            Address::Other { address, .. } => out.put_slice(address),
        }
    }
}

impl From<IpAddr> for Address {
    fn from(ip: IpAddr) -> Self {
        match ip {
            IpAddr::V4(a) => Address::V4(a),
            IpAddr::V6(a) => Address::V6(a),
        }
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Address::V4(a) => write!(f, "{a}"),
            Address::V6(a) => write!(f, "{a}"),
            Address::Other { family, address } => {
                write!(f, "family {family}: ")?;
                address.iter().try_for_each(|b| write!(f, "{b:02x}"))
            }
        }
    }
}

/// Time (§4.3.1): the 32-bit NTP seconds field. Values with the top bit clear are read in
/// the era that starts 2036-02-07 06:28:16 UTC (RFC 4330 §3, which §4.3.1 adopts), so the
/// type covers 1968–2104.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Time(pub u32);

/// Seconds from 1900-01-01 to 1970-01-01.
const NTP_UNIX_OFFSET: i64 = 2_208_988_800;

impl Time {
    /// From seconds since the Unix epoch. Outside 1968–2104 the value wraps, as the wire
    /// format cannot say more.
    pub fn from_unix(secs: i64) -> Time {
        Time((secs + NTP_UNIX_OFFSET).rem_euclid(1 << 32) as u32)
    }

    /// Seconds since the Unix epoch, applying the 2036 rollover rule.
    pub fn unix(self) -> i64 {
        let ntp = i64::from(self.0);
        if self.0 & 0x8000_0000 != 0 {
            ntp - NTP_UNIX_OFFSET
        } else {
            ntp + (1 << 32) - NTP_UNIX_OFFSET
        }
    }

    pub fn from_system_time(t: SystemTime) -> Time {
        let secs = match t.duration_since(UNIX_EPOCH) {
            Ok(d) => d.as_secs() as i64,
            Err(e) => -(e.duration().as_secs() as i64),
        };
        Time::from_unix(secs)
    }

    pub fn system_time(self) -> SystemTime {
        let s = self.unix();
        if s >= 0 {
            UNIX_EPOCH + Duration::from_secs(s as u64)
        } else {
            UNIX_EPOCH - Duration::from_secs(s.unsigned_abs())
        }
    }
}

impl fmt::Display for Time {
    /// `YYYY-MM-DDTHH:MM:SSZ`, computed without a calendar crate (days-from-civil inverse).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (y, m, d, hh, mm, ss) = civil(self.unix());
        write!(f, "{y:04}-{m:02}-{d:02}T{hh:02}:{mm:02}:{ss:02}Z")
    }
}

/// Splits Unix seconds into a proleptic Gregorian UTC date and time
/// (Howard Hinnant's civil_from_days algorithm).
pub fn civil(unix: i64) -> (i64, u32, u32, u32, u32, u32) {
    let days = unix.div_euclid(86_400);
    let rem = unix.rem_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (
        y,
        m,
        d,
        (rem / 3600) as u32,
        (rem / 60 % 60) as u32,
        (rem % 60) as u32,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_matches_the_spec_example() {
        // diameter-ro.md §1.4: Unix 1 700 000 000 → 0xE8FE6F80.
        assert_eq!(Time::from_unix(1_700_000_000).0, 0xE8FE_6F80);
        assert_eq!(Time(0xE8FE_6F80).unix(), 1_700_000_000);
    }

    #[test]
    fn time_rolls_over_in_2036() {
        // 2036-02-07 06:28:16 UTC is NTP 2^32, i.e. 0 in the new era.
        let rollover = (1i64 << 32) - NTP_UNIX_OFFSET;
        assert_eq!(Time::from_unix(rollover).0, 0);
        assert_eq!(Time(0).unix(), rollover);
        assert_eq!(Time(1).unix(), rollover + 1);
        assert_eq!(Time::from_unix(rollover + 100).unix(), rollover + 100);
        assert_eq!(Time(0).to_string(), "2036-02-07T06:28:16Z");
    }

    #[test]
    fn civil_dates() {
        assert_eq!(civil(0), (1970, 1, 1, 0, 0, 0));
        assert_eq!(
            Time::from_unix(1_700_000_000).to_string(),
            "2023-11-14T22:13:20Z"
        );
    }
}
