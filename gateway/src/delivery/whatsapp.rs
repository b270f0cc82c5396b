//! WhatsApp replies through the Cloud API: `POST {base}/{phone_number_id}/messages`.
//!
//! Meta's customer service window: a business may send free-form messages
//! only within 24 hours of the customer's last message; past that only an
//! approved template goes out. A reply due outside the window is sent as the
//! connection's template, or dead-lettered with
//! `outside_customer_service_window` — never reported as sent.
//!
//! Graph errors come as `{"error": {"message", "type", "code",
//! "error_subcode", "fbtrace_id"}}`; the code decides between dead-lettering
//! (`whatsapp:<code>`) and retrying.

use std::time::Duration;

use crewmesh_proto::messaging::v1::{OutboundMessage, WhatsappTarget};
use serde::Deserialize;
use serde_json::{Value, json};
use streamq::Outcome;

use super::{
    HttpError, HttpReply, Io, Route, SendOutcome, Template, count_send, record_latency, split,
    truncate,
};

/// WhatsApp's limit on a text message body.
pub const PART_CHARS: usize = 4_096;
/// Meta's limit on a template's text parameter.
pub const TEMPLATE_PARAMETER_CHARS: usize = 1_024;
/// Meta's customer service window, in seconds.
pub const SERVICE_WINDOW_SECS: i64 = 24 * 3600;
const METHOD: &str = "messages";

/// Whether a free-form message may go out at `now` (Unix seconds). An
/// unknown last message time (0) is left to Meta, which answers 131047 when
/// the window is closed.
pub fn within_window(customer_last_message_at: i64, now: i64) -> bool {
    customer_last_message_at <= 0 || now - customer_last_message_at <= SERVICE_WINDOW_SECS
}

#[derive(Debug, thiserror::Error)]
pub enum WhatsAppError {
    /// Our clock says the window is closed and the number has no template.
    #[error(
        "the customer's last message was {hours} h ago, past the 24-hour customer service window, and the number has no reply template"
    )]
    OutsideWindow { hours: i64 },
    /// Meta says the window is closed (131047) and there is no template.
    #[error("Meta refused a free-form message outside the customer service window (131047)")]
    ClosedWindow,
    #[error("the Graph API refused the message: {code}: {message}")]
    Refused {
        /// Graph's error code, or `http_<status>` when the body had none.
        code: String,
        message: String,
        auth: bool,
    },
    #[error("the Graph API is rate limiting this number: {code}")]
    RateLimited {
        code: String,
        retry_after: Option<Duration>,
    },
    #[error("the Graph API failed: {code}")]
    Transient { code: String },
    #[error("the Graph API could not be reached: {0}")]
    Unreachable(#[source] reqwest::Error),
    #[error("the Graph API answered unreadably: {0}")]
    InvalidResponse(String),
    #[error("{0:?} is not a WhatsApp phone_number_id")]
    BadNumber(String),
    #[error("Redis, which holds the delivery marks: {0}")]
    Redis(#[from] redis::RedisError),
}

impl WhatsAppError {
    pub(crate) fn is_auth(&self) -> bool {
        matches!(self, WhatsAppError::Refused { auth: true, .. })
    }

    fn send_outcome(&self) -> SendOutcome {
        match self {
            WhatsAppError::Refused { auth: true, .. } => SendOutcome::Unauthorized,
            WhatsAppError::Refused { auth: false, .. }
            | WhatsAppError::ClosedWindow
            | WhatsAppError::OutsideWindow { .. }
            | WhatsAppError::BadNumber(_) => SendOutcome::Rejected,
            WhatsAppError::RateLimited { .. } => SendOutcome::RateLimited,
            WhatsAppError::Transient { .. }
            | WhatsAppError::Unreachable(_)
            | WhatsAppError::InvalidResponse(_)
            | WhatsAppError::Redis(_) => SendOutcome::Retryable,
        }
    }

    pub(crate) fn outcome(&self) -> Outcome {
        match self {
            WhatsAppError::OutsideWindow { .. } | WhatsAppError::ClosedWindow => {
                Outcome::dead_letter("outside_customer_service_window", self.to_string())
            }
            WhatsAppError::Refused { code, .. } => {
                Outcome::dead_letter(format!("whatsapp:{code}"), self.to_string())
            }
            WhatsAppError::BadNumber(_) => {
                Outcome::dead_letter("malformed_message", self.to_string())
            }
            WhatsAppError::RateLimited { retry_after, .. } => Outcome::Retry {
                reason: "whatsapp:rate_limited".to_owned(),
                after: *retry_after,
            },
            WhatsAppError::Transient { code } => Outcome::retry(format!("whatsapp:{code}")),
            WhatsAppError::Unreachable(_) => Outcome::retry("whatsapp:unreachable"),
            WhatsAppError::InvalidResponse(_) => Outcome::retry("whatsapp:invalid_response"),
            WhatsAppError::Redis(_) => Outcome::retry("redis_unavailable"),
        }
    }
}

#[derive(Debug, Deserialize)]
struct ErrorEnvelope {
    error: GraphError,
}

#[derive(Debug, Deserialize)]
struct GraphError {
    #[serde(default)]
    code: Option<i64>,
    #[serde(default)]
    error_subcode: Option<i64>,
    #[serde(default)]
    message: String,
}

#[derive(Debug, Deserialize)]
struct Sent {
    #[serde(default)]
    messages: Vec<SentMessage>,
}

#[derive(Debug, Deserialize)]
struct SentMessage {
    id: String,
}

/// What a Graph error means for the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    /// The token is invalid, expired or lacks a permission.
    Auth,
    ClosedWindow,
    Permanent,
    RateLimited,
    Transient,
}

/// Graph's codes are an open set: those named here have a known meaning,
/// the rest are judged by the HTTP status (5xx and 429 retried, anything
/// else permanent, so nothing loops).
fn classify(status: u16, code: Option<i64>) -> Class {
    match code {
        Some(131_047) => Class::ClosedWindow,
        // 190 invalid or expired token, 102 session, 3 capability,
        // 10 and 200–299 permissions.
        Some(190 | 102 | 3 | 10 | 200..=299) => Class::Auth,
        // 100 invalid parameter, 131026 undeliverable, 131051 unsupported
        // type, 132xxx template problems.
        Some(100 | 131_026 | 131_051 | 132_000..=132_999) => Class::Permanent,
        // 4 app, 80007 account, 130429 throughput, 131048 spam and 131056
        // pair rate limits.
        Some(4 | 80_007 | 130_429 | 131_048 | 131_056) => Class::RateLimited,
        // 1 unknown, 2 service, 131000 something went wrong.
        Some(1 | 2 | 131_000) => Class::Transient,
        Some(_) | None => match status {
            429 => Class::RateLimited,
            500..=599 => Class::Transient,
            401 | 403 => Class::Auth,
            _ => Class::Permanent,
        },
    }
}

fn interpret(reply: &HttpReply) -> Result<(), WhatsAppError> {
    if (200..300).contains(&reply.status) {
        let sent: Sent = serde_json::from_slice(&reply.body)
            .map_err(|e| WhatsAppError::InvalidResponse(format!("not Graph's JSON: {e}")))?;
        return match sent.messages.first() {
            Some(m) if !m.id.is_empty() => Ok(()),
            _ => Err(WhatsAppError::InvalidResponse(
                "a success without a message id".to_owned(),
            )),
        };
    }
    let error = serde_json::from_slice::<ErrorEnvelope>(&reply.body)
        .ok()
        .map(|e| e.error);
    let code_number = error.as_ref().and_then(|e| e.code);
    let code = code_number.map_or_else(|| format!("http_{}", reply.status), |c| c.to_string());
    let message = error
        .as_ref()
        .map(|e| {
            let text = truncate(&e.message, 200);
            match e.error_subcode {
                Some(sub) => format!("{text} (subcode {sub})"),
                None => text,
            }
        })
        .unwrap_or_default();
    Err(match classify(reply.status, code_number) {
        Class::ClosedWindow => WhatsAppError::ClosedWindow,
        Class::Auth => WhatsAppError::Refused {
            code,
            message,
            auth: true,
        },
        Class::Permanent => WhatsAppError::Refused {
            code,
            message,
            auth: false,
        },
        Class::RateLimited => WhatsAppError::RateLimited {
            code,
            retry_after: reply.retry_after,
        },
        Class::Transient => WhatsAppError::Transient { code },
    })
}

/// A template parameter as Meta accepts it: no new lines or tabs and no runs
/// of spaces (error 132018 otherwise), at most 1,024 characters.
fn template_parameter(text: &str) -> String {
    let flat = text.split_whitespace().collect::<Vec<_>>().join(" ");
    truncate(&flat, TEMPLATE_PARAMETER_CHARS)
}

fn text_body(to: &str, text: &str) -> Value {
    json!({
        "messaging_product": "whatsapp",
        "recipient_type": "individual",
        "to": to,
        "type": "text",
        "text": { "preview_url": false, "body": text },
    })
}

fn template_body(to: &str, template: &Template, text: &str) -> Value {
    json!({
        "messaging_product": "whatsapp",
        "recipient_type": "individual",
        "to": to,
        "type": "template",
        "template": {
            "name": template.name,
            "language": { "code": template.language },
            "components": [{
                "type": "body",
                "parameters": [{ "type": "text", "text": template_parameter(text) }],
            }],
        },
    })
}

/// The Cloud API as the delivery workers use it.
#[derive(Debug, Clone)]
pub struct Graph {
    api_base: String,
}

impl Graph {
    pub fn new(api_base: &str) -> Graph {
        Graph {
            api_base: api_base.trim_end_matches('/').to_owned(),
        }
    }

    /// Delivers a reply at `now` (Unix seconds): in order, in parts of at
    /// most 4,096 characters, each once; or as the template outside the
    /// customer service window.
    pub(crate) async fn reply(
        &self,
        io: &Io,
        route: &Route,
        target: &WhatsappTarget,
        message: &OutboundMessage,
        now: i64,
    ) -> Result<(), WhatsAppError> {
        let number = &target.phone_number_id;
        if number.is_empty() || !number.bytes().all(|b| b.is_ascii_digit()) {
            return Err(WhatsAppError::BadNumber(number.clone()));
        }
        if !within_window(message.customer_last_message_at, now) {
            return match &route.template {
                Some(template) => {
                    self.send_template(io, route, target, message, template)
                        .await
                }
                None => Err(WhatsAppError::OutsideWindow {
                    hours: (now - message.customer_last_message_at) / 3600,
                }),
            };
        }
        for (i, text) in split(&message.text, PART_CHARS).into_iter().enumerate() {
            let mark = io.part(&message.id, i);
            if io.exists(&mark).await? {
                continue;
            }
            match self
                .send(io, route, number, &text_body(&target.to, text))
                .await
            {
                Ok(()) => {}
                // Meta's clock says the window closed (or we did not know
                // when it opened): the template still reaches the customer.
                Err(WhatsAppError::ClosedWindow) if i == 0 => {
                    return match &route.template {
                        Some(template) => {
                            self.send_template(io, route, target, message, template)
                                .await
                        }
                        None => Err(WhatsAppError::ClosedWindow),
                    };
                }
                Err(e) => return Err(e),
            }
            io.mark(&mark).await?;
            if i == 0 {
                record_latency("whatsapp", message.received_at_ms);
            }
        }
        Ok(())
    }

    async fn send_template(
        &self,
        io: &Io,
        route: &Route,
        target: &WhatsappTarget,
        message: &OutboundMessage,
        template: &Template,
    ) -> Result<(), WhatsAppError> {
        let mark = io.part(&message.id, "template");
        if io.exists(&mark).await? {
            return Ok(());
        }
        let body = template_body(&target.to, template, &message.text);
        self.send(io, route, &target.phone_number_id, &body).await?;
        io.mark(&mark).await?;
        record_latency("whatsapp", message.received_at_ms);
        Ok(())
    }

    async fn send(
        &self,
        io: &Io,
        route: &Route,
        number: &str,
        body: &Value,
    ) -> Result<(), WhatsAppError> {
        let url = format!("{}/{number}/{METHOD}", self.api_base);
        let result = match io.post_json(&url, &route.token, body).await {
            Ok(reply) => interpret(&reply),
            Err(HttpError::Network(e)) => Err(WhatsAppError::Unreachable(e)),
            Err(e @ HttpError::TooLarge) => Err(WhatsAppError::InvalidResponse(e.to_string())),
        };
        count_send(
            "whatsapp",
            METHOD,
            result
                .as_ref()
                .map_or_else(WhatsAppError::send_outcome, |()| SendOutcome::Ok),
        );
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error_reply(status: u16, code: i64, retry_after: Option<u64>) -> HttpReply {
        HttpReply {
            status,
            retry_after: retry_after.map(Duration::from_secs),
            body: json!({ "error": { "message": "(#x) something", "type": "OAuthException",
                                     "code": code, "error_subcode": 2_494_010,
                                     "fbtrace_id": "AbCdEf" } })
            .to_string()
            .into_bytes(),
        }
    }

    fn reason(reply: &HttpReply) -> String {
        match interpret(reply) {
            Ok(()) => "ok".to_owned(),
            Err(e) => match e.outcome() {
                Outcome::DeadLetter { reason, .. } => format!("dead:{reason}"),
                Outcome::Retry { reason, after } => format!("retry:{reason}:{after:?}"),
                Outcome::Done => "done".to_owned(),
            },
        }
    }

    #[test]
    fn the_window_is_24_hours_from_the_customers_last_message() {
        let now = 1_750_000_000;
        assert!(within_window(now, now));
        assert!(
            within_window(now - SERVICE_WINDOW_SECS, now),
            "exactly 24 h is inside"
        );
        assert!(!within_window(now - SERVICE_WINDOW_SECS - 1, now));
        assert!(!within_window(now - 25 * 3600, now));
        assert!(within_window(0, now), "unknown: Meta decides");
    }

    #[test]
    fn graph_errors_dead_letter_or_retry_by_code() {
        for code in [190, 10, 200, 230, 299, 3] {
            assert_eq!(
                reason(&error_reply(400, code, None)),
                format!("dead:whatsapp:{code}")
            );
            assert!(interpret(&error_reply(400, code, None)).is_err_and(|e| e.is_auth()));
        }
        for code in [100, 131_026, 131_051, 132_000, 132_012, 132_999, 368] {
            assert_eq!(
                reason(&error_reply(400, code, None)),
                format!("dead:whatsapp:{code}")
            );
            assert!(interpret(&error_reply(400, code, None)).is_err_and(|e| !e.is_auth()));
        }
        assert_eq!(
            reason(&error_reply(400, 131_047, None)),
            "dead:outside_customer_service_window"
        );
        for code in [4, 80_007, 130_429, 131_048, 131_056] {
            assert_eq!(
                reason(&error_reply(400, code, None)),
                "retry:whatsapp:rate_limited:None"
            );
        }
        assert_eq!(
            reason(&error_reply(429, 130_429, Some(9))),
            "retry:whatsapp:rate_limited:Some(9s)"
        );
        for code in [1, 2, 131_000] {
            assert_eq!(
                reason(&error_reply(500, code, None)),
                format!("retry:whatsapp:{code}:None")
            );
        }
        assert_eq!(
            reason(&error_reply(503, 131_016, None)),
            "retry:whatsapp:131016:None"
        );
    }

    #[test]
    fn bodies_without_graphs_envelope_are_judged_by_status() {
        let bare = |status| HttpReply {
            status,
            retry_after: None,
            body: b"<html>Bad Gateway</html>".to_vec(),
        };
        assert_eq!(reason(&bare(502)), "retry:whatsapp:http_502:None");
        assert_eq!(reason(&bare(429)), "retry:whatsapp:rate_limited:None");
        assert_eq!(reason(&bare(401)), "dead:whatsapp:http_401");
        assert_eq!(reason(&bare(404)), "dead:whatsapp:http_404");
        assert_eq!(reason(&bare(200)), "retry:whatsapp:invalid_response:None");
        let sent = HttpReply {
            status: 200,
            retry_after: None,
            body: br#"{"messaging_product":"whatsapp","contacts":[{"input":"1","wa_id":"1"}],"messages":[{"id":"wamid.X"}]}"#.to_vec(),
        };
        assert_eq!(reason(&sent), "ok");
    }

    #[test]
    fn templates_carry_the_reply_as_their_one_flat_parameter() {
        let template = Template {
            name: "order_update".into(),
            language: "en_US".into(),
        };
        let text = format!("Line one\n\nLine\ttwo     spaced {}", "x".repeat(2000));
        let body = template_body("16505551234", &template, &text);
        assert_eq!(body["type"], "template");
        assert_eq!(body["template"]["name"], "order_update");
        assert_eq!(body["template"]["language"]["code"], "en_US");
        let parameter = body["template"]["components"][0]["parameters"][0]["text"]
            .as_str()
            .unwrap_or_default();
        assert!(parameter.starts_with("Line one Line two spaced xxx"));
        assert_eq!(parameter.chars().count(), TEMPLATE_PARAMETER_CHARS);
        assert_eq!(body["template"]["components"][0]["type"], "body");
    }
}
