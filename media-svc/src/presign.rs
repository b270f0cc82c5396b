//! AWS Signature Version 4 query-string presigning for S3 GET and PUT.
//!
//! Written here rather than taken from aws-sdk-s3 because the SDK's presigner
//! adds an `x-id` parameter (so it cannot reproduce AWS's documented example,
//! our correctness anchor) and signs for the endpoint it talks to, while a URL
//! handed to clients must be signed for the public host. Pure: the time is a
//! parameter, so signatures are reproducible.

use std::fmt::Write as _;

use aws_lc_rs::{digest, hmac};
use chrono::{DateTime, Utc};

/// What S3 accepts for `X-Amz-Expires`: one second to seven days.
pub const MAX_EXPIRES_SECS: u64 = 7 * 24 * 3600;

const ALGORITHM: &str = "AWS4-HMAC-SHA256";
const UNSIGNED_PAYLOAD: &str = "UNSIGNED-PAYLOAD";

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a presigned URL expires after 1 to {MAX_EXPIRES_SECS} seconds (7 days), not {0}")]
pub struct ExpiryOutOfRange(pub u64);

pub struct Credentials<'a> {
    pub access_key_id: &'a str,
    pub secret_access_key: &'a str,
    pub region: &'a str,
}

impl std::fmt::Debug for Credentials<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"[REDACTED]")
            .field("region", &self.region)
            .finish()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Addressing {
    /// `{scheme}://{authority}/{bucket}/{key}`: what S3-compatible servers expect.
    Path,
    /// `{scheme}://{bucket}.{authority}/{key}`: AWS's default.
    VirtualHosted,
}

#[derive(Debug, Clone, Copy)]
pub struct Target<'a> {
    pub scheme: &'a str,
    /// `host[:port]` exactly as the client will send it in `Host`.
    pub authority: &'a str,
    pub bucket: &'a str,
    pub key: &'a str,
    pub addressing: Addressing,
}

#[derive(Debug, Clone, Copy)]
pub enum Operation<'a> {
    Get,
    /// Type and length are signed, so storage refuses any other body.
    Put {
        content_type: &'a str,
        content_length: u64,
    },
}

/// The presigned URL for `operation` on `target`, valid from `at` for `expires_secs`.
pub fn presign(
    credentials: &Credentials<'_>,
    target: &Target<'_>,
    operation: Operation<'_>,
    at: DateTime<Utc>,
    expires_secs: u64,
) -> Result<String, ExpiryOutOfRange> {
    if !(1..=MAX_EXPIRES_SECS).contains(&expires_secs) {
        return Err(ExpiryOutOfRange(expires_secs));
    }
    let (host, path) = match target.addressing {
        Addressing::Path => (
            target.authority.to_owned(),
            format!(
                "/{}/{}",
                uri_encode(target.bucket, false),
                uri_encode(target.key, false)
            ),
        ),
        Addressing::VirtualHosted => (
            format!("{}.{}", target.bucket, target.authority),
            format!("/{}", uri_encode(target.key, false)),
        ),
    };
    let amz_date = at.format("%Y%m%dT%H%M%SZ").to_string();
    let date = &amz_date[..8];
    let scope = format!("{date}/{}/s3/aws4_request", credentials.region);

    let (method, canonical_headers, signed_headers) = match operation {
        Operation::Get => ("GET", format!("host:{host}\n"), "host"),
        Operation::Put {
            content_type,
            content_length,
        } => (
            "PUT",
            format!(
                "content-length:{content_length}\ncontent-type:{}\nhost:{host}\n",
                content_type.trim()
            ),
            "content-length;content-type;host",
        ),
    };

    // Already in canonical (byte-wise sorted) order.
    let query = [
        ("X-Amz-Algorithm", ALGORITHM.to_owned()),
        (
            "X-Amz-Credential",
            format!("{}/{scope}", credentials.access_key_id),
        ),
        ("X-Amz-Date", amz_date.clone()),
        ("X-Amz-Expires", expires_secs.to_string()),
        ("X-Amz-SignedHeaders", signed_headers.to_owned()),
    ]
    .iter()
    .map(|(k, v)| format!("{}={}", uri_encode(k, true), uri_encode(v, true)))
    .collect::<Vec<_>>()
    .join("&");

    let canonical_request = format!(
        "{method}\n{path}\n{query}\n{canonical_headers}\n{signed_headers}\n{UNSIGNED_PAYLOAD}"
    );
    let string_to_sign = format!(
        "{ALGORITHM}\n{amz_date}\n{scope}\n{}",
        hex(digest::digest(&digest::SHA256, canonical_request.as_bytes()).as_ref())
    );
    let signing_key = [date, credentials.region, "s3", "aws4_request"]
        .iter()
        .fold(
            format!("AWS4{}", credentials.secret_access_key).into_bytes(),
            |key, part| hmac_sha256(&key, part.as_bytes()),
        );
    let signature = hex(&hmac_sha256(&signing_key, string_to_sign.as_bytes()));
    Ok(format!(
        "{}://{host}{path}?{query}&X-Amz-Signature={signature}",
        target.scheme
    ))
}

fn hmac_sha256(key: &[u8], data: &[u8]) -> Vec<u8> {
    let key = hmac::Key::new(hmac::HMAC_SHA256, key);
    hmac::sign(&key, data).as_ref().to_vec()
}

pub fn hex(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(out, "{b:02x}");
    }
    out
}

/// RFC 3986 percent-encoding as SigV4 wants it: unreserved characters stay,
/// everything else is `%XX` (upper case); `/` stays only in paths.
fn uri_encode(input: &str, encode_slash: bool) -> String {
    let mut out = String::with_capacity(input.len());
    for b in input.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(char::from(b));
            }
            b'/' if !encode_slash => out.push('/'),
            _ => {
                let _ = write!(out, "%{b:02X}");
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone as _;

    use super::*;

    const AWS_EXAMPLE: Credentials<'static> = Credentials {
        access_key_id: "AKIAIOSFODNN7EXAMPLE",
        secret_access_key: "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
        region: "us-east-1",
    };

    fn example_time() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2013, 5, 24, 0, 0, 0).unwrap()
    }

    /// The worked example of AWS's "Authenticating Requests: Using Query
    /// Parameters" page (GET examplebucket/test.txt, 24 h).
    #[test]
    fn reproduces_the_aws_documented_presigned_get() {
        let target = Target {
            scheme: "https",
            authority: "s3.amazonaws.com",
            bucket: "examplebucket",
            key: "test.txt",
            addressing: Addressing::VirtualHosted,
        };
        let url = presign(&AWS_EXAMPLE, &target, Operation::Get, example_time(), 86400).unwrap();
        assert_eq!(
            url,
            "https://examplebucket.s3.amazonaws.com/test.txt\
             ?X-Amz-Algorithm=AWS4-HMAC-SHA256\
             &X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F20130524%2Fus-east-1%2Fs3%2Faws4_request\
             &X-Amz-Date=20130524T000000Z&X-Amz-Expires=86400&X-Amz-SignedHeaders=host\
             &X-Amz-Signature=aeeed9bbccd4d02ee5c0109b86d86835f995330da4c265957d157751f604d404"
        );
    }

    #[test]
    fn expiry_is_one_second_to_seven_days() {
        let target = Target {
            scheme: "http",
            authority: "127.0.0.1:8014",
            bucket: "b",
            key: "k",
            addressing: Addressing::Path,
        };
        let sign = |secs| presign(&AWS_EXAMPLE, &target, Operation::Get, example_time(), secs);
        assert_eq!(sign(0), Err(ExpiryOutOfRange(0)));
        assert!(sign(1).is_ok());
        assert!(sign(MAX_EXPIRES_SECS).is_ok());
        assert_eq!(
            sign(MAX_EXPIRES_SECS + 1),
            Err(ExpiryOutOfRange(MAX_EXPIRES_SECS + 1))
        );
    }

    #[test]
    fn path_style_encodes_key_segments_and_signs_put_headers() {
        let target = Target {
            scheme: "http",
            authority: "127.0.0.1:8014",
            bucket: "crewmesh-media",
            key: "tenants/a b/ü.png",
            addressing: Addressing::Path,
        };
        let put = Operation::Put {
            content_type: "image/png",
            content_length: 3,
        };
        let url = presign(&AWS_EXAMPLE, &target, put, example_time(), 900).unwrap();
        assert!(
            url.starts_with("http://127.0.0.1:8014/crewmesh-media/tenants/a%20b/%C3%BC.png?"),
            "{url}"
        );
        assert!(url.contains("X-Amz-SignedHeaders=content-length%3Bcontent-type%3Bhost"));
        let get = presign(&AWS_EXAMPLE, &target, Operation::Get, example_time(), 900).unwrap();
        assert_ne!(
            url.rsplit_once('=').map(|p| p.1),
            get.rsplit_once('=').map(|p| p.1),
            "the signed headers change the signature"
        );
    }
}
