//! Conversions every gRPC adapter makes at its boundary: ids and timestamps
//! in, timestamps out, with validation errors that name the field.

use chrono::{DateTime, Utc};
use tonic::Status;
use uuid::Uuid;

use crate::error::invalid_field;

pub fn timestamp(at: DateTime<Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: at.timestamp(),
        nanos: i32::try_from(at.timestamp_subsec_nanos()).unwrap_or(0),
    }
}

pub fn from_timestamp(
    field: &str,
    ts: Option<prost_types::Timestamp>,
) -> Result<Option<DateTime<Utc>>, Status> {
    ts.map(|t| {
        DateTime::from_timestamp(t.seconds, u32::try_from(t.nanos).unwrap_or(0))
            .ok_or_else(|| invalid_field(field, "is out of range"))
    })
    .transpose()
}

pub fn parse_id(field: &str, value: &str) -> Result<Uuid, Status> {
    value
        .parse()
        .map_err(|_| invalid_field(field, "must be a UUID"))
}

/// An optional id: empty means absent.
pub fn parse_opt_id(field: &str, value: &str) -> Result<Option<Uuid>, Status> {
    if value.is_empty() {
        Ok(None)
    } else {
        parse_id(field, value).map(Some)
    }
}

/// Money in the contracts: decimal strings of USD, held as integer
/// nano-dollars (1 USD = 10⁹) so no float ever touches a price.
pub const NANOS_PER_USD: i64 = 1_000_000_000;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("must be a non-negative decimal amount in USD with at most 9 decimal places, e.g. 25.00")]
pub struct InvalidAmount;

/// "12.5" → 12_500_000_000.
pub fn parse_usd(text: &str) -> Result<i64, InvalidAmount> {
    let text = text.trim();
    let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if whole.is_empty() || !digits(whole) || !digits(fraction) || fraction.len() > 9 {
        return Err(InvalidAmount);
    }
    let whole: i64 = whole.parse().map_err(|_| InvalidAmount)?;
    let fraction: i64 = format!("{fraction:0<9}")
        .parse()
        .map_err(|_| InvalidAmount)?;
    whole
        .checked_mul(NANOS_PER_USD)
        .and_then(|w| w.checked_add(fraction))
        .ok_or(InvalidAmount)
}

/// 12_500_000_000 → "12.50": at least two decimals, no trailing zeros beyond.
pub fn format_usd(nanos: i64) -> String {
    let sign = if nanos < 0 { "-" } else { "" };
    let abs = nanos.unsigned_abs();
    let whole = abs / NANOS_PER_USD as u64;
    let fraction = format!("{:09}", abs % NANOS_PER_USD as u64);
    let trimmed = fraction.trim_end_matches('0');
    let fraction = if trimmed.len() < 2 {
        &fraction[..2]
    } else {
        trimmed
    };
    format!("{sign}{whole}.{fraction}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts_round_trip_exactly() {
        assert_eq!(parse_usd("25"), Ok(25 * NANOS_PER_USD));
        assert_eq!(parse_usd("0.000000001"), Ok(1));
        assert_eq!(parse_usd("12.5"), Ok(12_500_000_000));
        assert_eq!(format_usd(12_500_000_000), "12.50");
        assert_eq!(format_usd(1), "0.000000001");
        assert_eq!(format_usd(0), "0.00");
        assert_eq!(format_usd(123_456_789), "0.123456789");
        for bad in ["", "-1", "1.0000000001", "abc", "1,5", ".5", "1e3"] {
            assert_eq!(parse_usd(bad), Err(InvalidAmount), "{bad}");
        }
        assert_eq!(parse_usd("99999999999"), Err(InvalidAmount), "overflow");
    }

    #[test]
    fn round_trips_and_field_errors() {
        let now = Utc::now();
        assert_eq!(
            from_timestamp("t", Some(timestamp(now))).unwrap(),
            Some(now)
        );
        assert_eq!(from_timestamp("t", None).unwrap(), None);
        assert!(parse_id("id", "nope").is_err());
        assert_eq!(parse_opt_id("id", "").unwrap(), None);
        let id = Uuid::now_v7();
        assert_eq!(parse_opt_id("id", &id.to_string()).unwrap(), Some(id));
        assert_eq!(
            crate::error::violated_field(&parse_id("agent_id", "x").unwrap_err()).as_deref(),
            Some("agent_id")
        );
    }
}
