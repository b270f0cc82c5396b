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

#[cfg(test)]
mod tests {
    use super::*;

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
