//! Anthropic's Messages API (`POST {base}/messages`).
//!
//! One HTTP attempt per call: retrying belongs to the caller
//! (`retry::Policy`), so this adapter's job is to classify every failure
//! precisely enough for the policy to decide — transient (429, 5xx, 529,
//! transport) versus final (key, model, request).

use std::time::Duration;

use reqwest::StatusCode;
use reqwest::header::{HeaderMap, HeaderValue, RETRY_AFTER};
use secrecy::ExposeSecret;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::{
    ChatRequest, ChatResponse, Endpoint, FinishReason, Message, Part, ProviderError, ProviderKey,
    Role, TokenUsage, ToolCall,
};

/// Used when the caller hands us no base URL at all.
pub const DEFAULT_BASE: &str = "https://api.anthropic.com/v1";

/// The Messages API version this adapter speaks; Anthropic requires it on
/// every request and pins the wire shapes below to it.
const API_VERSION: &str = "2023-06-01";

/// One chat call on the tenant's key.
pub async fn chat(
    endpoint: Endpoint<'_>,
    key: &ProviderKey,
    request: &ChatRequest,
) -> Result<ChatResponse, ProviderError> {
    let body = request_body(request)?;
    let base = if endpoint.base.is_empty() {
        DEFAULT_BASE
    } else {
        endpoint.base
    };
    let url = format!("{}/messages", base.trim_end_matches('/'));

    let secret = key.api_key.expose_secret();
    // Built by hand rather than through `.header(&str)` so that a malformed
    // key fails here with a message of our own (reqwest's would be a builder
    // error), and so that the value is marked sensitive and never shows up
    // in a `Debug` of the request.
    let mut api_key = HeaderValue::from_str(secret).map_err(|_| ProviderError::InvalidKey)?;
    api_key.set_sensitive(true);

    let response = endpoint
        .http
        .post(url)
        // The shared client already has this timeout; repeating it per
        // request keeps `Timeout(endpoint.timeout)` truthful whatever client
        // the endpoint carries.
        .timeout(endpoint.timeout)
        .header("x-api-key", api_key)
        .header("anthropic-version", API_VERSION)
        .json(&body)
        .send()
        .await
        .map_err(|e| super::transport_error(&e, endpoint.timeout))?;

    let status = response.status();
    let retry_after = retry_after(response.headers());
    let body = super::read_body(response, endpoint.timeout).await?;

    if status.is_success() {
        let text =
            std::str::from_utf8(&body).map_err(|_| ProviderError::InvalidResponse("not UTF-8"))?;
        parse_response(text)
    } else {
        let error = classify_error(status, retry_after, &body, &request.model);
        tracing::debug!(status = status.as_u16(), %error, "anthropic call failed");
        Err(error)
    }
}

// ---------------------------------------------------------------- request

/// The JSON body of a Messages call.
fn request_body(request: &ChatRequest) -> Result<Value, ProviderError> {
    let mut body = Map::new();
    body.insert("model".to_owned(), json!(request.model));
    body.insert("max_tokens".to_owned(), json!(request.max_tokens));
    // Anthropic takes the system prompt as a top-level field, not a turn;
    // an empty one is omitted rather than sent as "".
    if !request.system.is_empty() {
        body.insert("system".to_owned(), json!(request.system));
    }
    body.insert(
        "messages".to_owned(),
        Value::Array(turns(&request.messages)?),
    );
    if !request.tools.is_empty() {
        let tools = request
            .tools
            .iter()
            .map(|t| {
                json!({
                    "name": t.name,
                    "description": t.description,
                    "input_schema": t.parameters,
                })
            })
            .collect();
        body.insert("tools".to_owned(), Value::Array(tools));
    }
    Ok(Value::Object(body))
}

/// Our messages as Anthropic turns.
///
/// Anthropic has no `tool` role: results travel as `tool_result` blocks in a
/// user turn, and turns must alternate user/assistant. So consecutive
/// messages that land on the same role — several tool results, a user
/// message right after them, two user messages in a row — are merged into
/// one turn, in order (which also keeps `tool_result` blocks ahead of any
/// text, as Anthropic requires). Messages with nothing to send are skipped
/// before merging, so they cannot break the alternation either.
fn turns(messages: &[Message]) -> Result<Vec<Value>, ProviderError> {
    let mut turns: Vec<(&'static str, Vec<Value>)> = Vec::new();
    for message in messages {
        let (role, blocks) = match message.role {
            Role::User => ("user", content_blocks(&message.parts)),
            Role::Assistant => {
                let mut blocks = content_blocks(&message.parts);
                blocks.extend(message.tool_calls.iter().map(tool_use_block));
                ("assistant", blocks)
            }
            Role::Tool => ("user", vec![tool_result_block(message)?]),
        };
        if blocks.is_empty() {
            continue;
        }
        match turns.last_mut() {
            Some((last, content)) if *last == role => content.extend(blocks),
            _ => turns.push((role, blocks)),
        }
    }
    Ok(turns
        .into_iter()
        .map(|(role, content)| json!({ "role": role, "content": content }))
        .collect())
}

/// Text and image parts as content blocks. Empty text is dropped: Anthropic
/// rejects empty text blocks, and an assistant turn that only called tools
/// usually has no text.
fn content_blocks(parts: &[Part]) -> Vec<Value> {
    parts
        .iter()
        .filter_map(|part| match part {
            Part::Text(text) if text.is_empty() => None,
            Part::Text(text) => Some(json!({ "type": "text", "text": text })),
            Part::ImageUrl(url) => Some(json!({
                "type": "image",
                "source": { "type": "url", "url": url },
            })),
        })
        .collect()
}

fn tool_use_block(call: &ToolCall) -> Value {
    json!({
        "type": "tool_use",
        "id": call.id,
        "name": call.name,
        "input": tool_input(&call.arguments),
    })
}

/// A call's raw arguments as the `input` object Anthropic requires.
///
/// Arguments that are not a JSON object become `{}`: the tool loop has
/// already answered such a call with an error result, and what the history
/// needs here is a well-formed `tool_use` for that result to pair with —
/// sending the broken text would make Anthropic reject the whole request.
fn tool_input(arguments: &str) -> Value {
    match serde_json::from_str::<Value>(arguments) {
        Ok(object @ Value::Object(_)) => object,
        _ => Value::Object(Map::new()),
    }
}

fn tool_result_block(message: &Message) -> Result<Value, ProviderError> {
    // Without the id Anthropic cannot pair the result with its call and
    // rejects the request; saying so here names the actual bug.
    let id = message
        .tool_call_id
        .as_deref()
        .ok_or(ProviderError::Malformed(
            "a tool result is missing the id of the call it answers",
        ))?;
    let mut block = json!({ "type": "tool_result", "tool_use_id": id });
    let text = message.text();
    // `content` is optional for Anthropic; omitting it is the documented
    // way to say "no output", where an empty string risks a rejection.
    if !text.is_empty()
        && let Value::Object(fields) = &mut block
    {
        fields.insert("content".to_owned(), Value::String(text));
    }
    Ok(block)
}

// --------------------------------------------------------------- response

#[derive(Debug, Deserialize)]
struct WireResponse {
    content: Vec<WireBlock>,
    stop_reason: Option<String>,
    // Required: a reply without usage would be billed as free.
    usage: WireUsage,
}

#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum WireBlock {
    Text {
        text: String,
    },
    ToolUse {
        id: String,
        name: String,
        input: Value,
    },
    /// Blocks we neither request nor use (thinking, server tools, …): newer
    /// models may send them, and they must not fail the whole answer.
    #[serde(other)]
    Other,
}

/// Counts as Anthropic wrote them, judged by [`TokenUsage::reported`] (a
/// provider's numbers are untrusted input).
#[derive(Debug, Deserialize)]
struct WireUsage {
    input_tokens: Value,
    output_tokens: Value,
    // Anthropic counts cached prompt tokens apart from `input_tokens`; they
    // are still prompt tokens the tenant pays for.
    #[serde(default)]
    cache_creation_input_tokens: Value,
    #[serde(default)]
    cache_read_input_tokens: Value,
}

/// A 200 body as our response.
fn parse_response(body: &str) -> Result<ChatResponse, ProviderError> {
    let wire: WireResponse = serde_json::from_str(body)
        .map_err(|_| ProviderError::InvalidResponse("not an Anthropic message"))?;
    let mut text = String::new();
    let mut tool_calls = Vec::new();
    for block in wire.content {
        match block {
            // Joined with nothing in between: Anthropic splits one answer
            // into several text blocks (e.g. around citations) that read
            // back-to-back.
            WireBlock::Text { text: piece } => text.push_str(&piece),
            WireBlock::ToolUse { id, name, input } => tool_calls.push(ToolCall {
                id,
                name,
                arguments: input.to_string(),
            }),
            WireBlock::Other => {}
        }
    }
    let usage = TokenUsage::reported(
        &wire.usage.input_tokens,
        &wire.usage.output_tokens,
        &[
            &wire.usage.cache_creation_input_tokens,
            &wire.usage.cache_read_input_tokens,
        ],
    );
    Ok(ChatResponse {
        text,
        tool_calls,
        usage,
        finish: finish_reason(wire.stop_reason.as_deref()),
    })
}

fn finish_reason(stop_reason: Option<&str>) -> FinishReason {
    match stop_reason {
        Some("end_turn" | "stop_sequence") => FinishReason::Stop,
        Some("tool_use") => FinishReason::ToolCalls,
        Some("max_tokens") => FinishReason::Length,
        Some("refusal") => FinishReason::ContentFilter,
        // pause_turn, model_context_window_exceeded, anything newer.
        _ => FinishReason::Other,
    }
}

// ----------------------------------------------------------------- errors

#[derive(Debug, Deserialize)]
struct WireErrorBody {
    error: WireError,
}

#[derive(Debug, Deserialize)]
struct WireError {
    #[serde(rename = "type", default)]
    kind: String,
    #[serde(default)]
    message: String,
}

/// `Retry-After` in seconds (the only form Anthropic sends).
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?;
    value.trim().parse::<u64>().ok().map(Duration::from_secs)
}

/// A non-2xx answer as our error. The body is read to classify, never kept:
/// whatever answered may have echoed the key, or be no provider at all.
fn classify_error(
    status: StatusCode,
    retry_after: Option<Duration>,
    body: &[u8],
    model: &str,
) -> ProviderError {
    let (kind, names_model) = match serde_json::from_slice::<WireErrorBody>(body) {
        Ok(wire) => {
            let message = wire.error.message;
            let names_model = (!model.is_empty() && message.contains(model))
                || message.to_lowercase().contains("model");
            (wire.error.kind, names_model)
        }
        Err(_) => (String::new(), false),
    };
    let code = status.as_u16();
    match code {
        401 | 403 => ProviderError::Unauthorized { status: code },
        429 => ProviderError::RateLimited {
            attempts: 1,
            retry_after,
        },
        _ if kind == "not_found_error" && names_model => {
            ProviderError::UnknownModel(model.to_owned())
        }
        // Any other 404 is the path: usually a base URL without `/v1`.
        404 => ProviderError::BadRequest {
            status: 404,
            hint: "; check the key's base URL",
        },
        // 5xx and Anthropic's 529 "overloaded": worth another attempt.
        500.. => ProviderError::Upstream {
            status: code,
            attempts: 1,
        },
        // Any other 4xx is about this request and will not heal on a retry.
        400..=499 => ProviderError::BadRequest {
            status: code,
            hint: "",
        },
        _ => ProviderError::unexpected_status(code),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use std::net::SocketAddr;
    use std::sync::{Arc, Mutex};

    use axum::Router;
    use axum::body::{Body, Bytes};
    use axum::extract::State;
    use axum::http::{Method, Uri};
    use axum::response::Response;
    use secrecy::SecretString;

    use super::super::ToolSpec;
    use super::*;

    const KEY: &str = "sk-ant-test-0123456789abcdef";
    const MODEL: &str = "claude-3-5-haiku-latest";

    fn request(messages: Vec<Message>) -> ChatRequest {
        ChatRequest {
            model: MODEL.to_owned(),
            system: String::new(),
            messages,
            tools: vec![],
            max_tokens: 512,
        }
    }

    fn weather_tool() -> ToolSpec {
        ToolSpec {
            name: "get_weather".to_owned(),
            description: "Current weather for a city".to_owned(),
            parameters: json!({
                "type": "object",
                "properties": { "city": { "type": "string" } },
                "required": ["city"],
            }),
        }
    }

    fn assistant_calling(text: &str, calls: &[(&str, &str, &str)]) -> Message {
        Message {
            tool_calls: calls
                .iter()
                .map(|(id, name, arguments)| ToolCall {
                    id: (*id).to_owned(),
                    name: (*name).to_owned(),
                    arguments: (*arguments).to_owned(),
                })
                .collect(),
            ..Message::assistant(text)
        }
    }

    // ------------------------------------------------------ request body

    #[test]
    fn anthropic_body_omits_empty_system_and_tools() {
        let body = request_body(&request(vec![Message::user("hi")])).unwrap();
        assert_eq!(
            body,
            json!({
                "model": MODEL,
                "max_tokens": 512,
                "messages": [
                    { "role": "user", "content": [{ "type": "text", "text": "hi" }] },
                ],
            })
        );
    }

    #[test]
    fn anthropic_body_carries_system_and_tools() {
        let mut req = request(vec![Message::user("weather in Oslo?")]);
        req.system = "You are helpful.".to_owned();
        req.tools = vec![weather_tool()];
        let body = request_body(&req).unwrap();
        assert_eq!(body["system"], "You are helpful.");
        assert_eq!(
            body["tools"],
            json!([{
                "name": "get_weather",
                "description": "Current weather for a city",
                "input_schema": {
                    "type": "object",
                    "properties": { "city": { "type": "string" } },
                    "required": ["city"],
                },
            }])
        );
    }

    #[test]
    fn anthropic_body_maps_images_to_url_sources() {
        let message = Message {
            parts: vec![
                Part::Text("what is this?".to_owned()),
                Part::ImageUrl("https://media.example/cat.png?sig=abc".to_owned()),
            ],
            ..Message::user("")
        };
        let body = request_body(&request(vec![message])).unwrap();
        assert_eq!(
            body["messages"],
            json!([{
                "role": "user",
                "content": [
                    { "type": "text", "text": "what is this?" },
                    {
                        "type": "image",
                        "source": { "type": "url", "url": "https://media.example/cat.png?sig=abc" },
                    },
                ],
            }])
        );
    }

    #[test]
    fn anthropic_body_maps_a_tool_round_trip_and_merges_user_turns() {
        let messages = vec![
            Message::user("weather in Oslo and Bergen?"),
            assistant_calling(
                "Let me check.",
                &[
                    ("toolu_1", "get_weather", r#"{"city":"Oslo"}"#),
                    ("toolu_2", "get_weather", r#"{"city":"Bergen"}"#),
                ],
            ),
            Message::tool_result("toolu_1", "4°C, rain"),
            Message::tool_result("toolu_2", "6°C, cloudy"),
            Message::user("and tomorrow?"),
        ];
        let body = request_body(&request(messages)).unwrap();
        assert_eq!(
            body["messages"],
            json!([
                {
                    "role": "user",
                    "content": [{ "type": "text", "text": "weather in Oslo and Bergen?" }],
                },
                {
                    "role": "assistant",
                    "content": [
                        { "type": "text", "text": "Let me check." },
                        { "type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": { "city": "Oslo" } },
                        { "type": "tool_use", "id": "toolu_2", "name": "get_weather", "input": { "city": "Bergen" } },
                    ],
                },
                {
                    "role": "user",
                    "content": [
                        { "type": "tool_result", "tool_use_id": "toolu_1", "content": "4°C, rain" },
                        { "type": "tool_result", "tool_use_id": "toolu_2", "content": "6°C, cloudy" },
                        { "type": "text", "text": "and tomorrow?" },
                    ],
                },
            ])
        );
    }

    #[test]
    fn anthropic_body_tool_only_turns_have_no_empty_text_and_bad_arguments_become_empty_input() {
        let messages = vec![
            Message::user("go"),
            assistant_calling(
                "",
                &[
                    ("toolu_a", "lookup", "{not json"),
                    ("toolu_b", "lookup", "[1,2]"),
                    ("toolu_c", "lookup", ""),
                ],
            ),
            Message::tool_result("toolu_a", ""),
        ];
        let body = request_body(&request(messages)).unwrap();
        assert_eq!(
            body["messages"][1],
            json!({
                "role": "assistant",
                "content": [
                    { "type": "tool_use", "id": "toolu_a", "name": "lookup", "input": {} },
                    { "type": "tool_use", "id": "toolu_b", "name": "lookup", "input": {} },
                    { "type": "tool_use", "id": "toolu_c", "name": "lookup", "input": {} },
                ],
            })
        );
        // An empty result omits `content` instead of sending "".
        assert_eq!(
            body["messages"][2],
            json!({
                "role": "user",
                "content": [{ "type": "tool_result", "tool_use_id": "toolu_a" }],
            })
        );
    }

    #[test]
    fn anthropic_body_merges_consecutive_same_role_messages_and_skips_empty_ones() {
        let messages = vec![
            Message::user("first"),
            Message::assistant(""),
            Message::user("second"),
            Message::assistant("reply"),
        ];
        let body = request_body(&request(messages)).unwrap();
        assert_eq!(
            body["messages"],
            json!([
                {
                    "role": "user",
                    "content": [
                        { "type": "text", "text": "first" },
                        { "type": "text", "text": "second" },
                    ],
                },
                { "role": "assistant", "content": [{ "type": "text", "text": "reply" }] },
            ])
        );
    }

    #[test]
    fn anthropic_body_rejects_a_tool_result_without_its_call_id() {
        let orphan = Message {
            tool_call_id: None,
            ..Message::tool_result("x", "out")
        };
        let err = request_body(&request(vec![Message::user("q"), orphan])).unwrap_err();
        assert!(matches!(err, ProviderError::Malformed(_)), "{err:?}");
    }

    // ---------------------------------------------------------- response

    fn message_json(content: Value, stop_reason: &str) -> String {
        json!({
            "id": "msg_01",
            "type": "message",
            "role": "assistant",
            "model": MODEL,
            "content": content,
            "stop_reason": stop_reason,
            "stop_sequence": null,
            "usage": { "input_tokens": 42, "output_tokens": 7 },
        })
        .to_string()
    }

    #[test]
    fn anthropic_response_parses_text_tool_use_and_usage() {
        let body = message_json(
            json!([
                { "type": "text", "text": "Checking " },
                { "type": "thinking", "thinking": "hmm", "signature": "sig" },
                { "type": "text", "text": "the weather." },
                { "type": "tool_use", "id": "toolu_9", "name": "get_weather", "input": { "city": "Oslo" } },
            ]),
            "tool_use",
        );
        let response = parse_response(&body).unwrap();
        assert_eq!(response.text, "Checking the weather.");
        assert_eq!(
            response.tool_calls,
            vec![ToolCall {
                id: "toolu_9".to_owned(),
                name: "get_weather".to_owned(),
                arguments: r#"{"city":"Oslo"}"#.to_owned(),
            }]
        );
        assert_eq!(
            response.usage,
            TokenUsage {
                prompt_tokens: 42,
                completion_tokens: 7
            }
        );
        assert_eq!(response.finish, FinishReason::ToolCalls);
    }

    #[test]
    fn anthropic_response_maps_every_stop_reason() {
        for (stop_reason, finish) in [
            ("end_turn", FinishReason::Stop),
            ("stop_sequence", FinishReason::Stop),
            ("tool_use", FinishReason::ToolCalls),
            ("max_tokens", FinishReason::Length),
            ("refusal", FinishReason::ContentFilter),
            ("pause_turn", FinishReason::Other),
        ] {
            let body = message_json(json!([{ "type": "text", "text": "x" }]), stop_reason);
            assert_eq!(
                parse_response(&body).unwrap().finish,
                finish,
                "{stop_reason}"
            );
        }
        let null_stop = json!({
            "content": [], "stop_reason": null,
            "usage": { "input_tokens": 1, "output_tokens": 0 },
        });
        assert_eq!(
            parse_response(&null_stop.to_string()).unwrap().finish,
            FinishReason::Other
        );
    }

    #[test]
    fn anthropic_response_counts_cached_prompt_tokens() {
        let body = json!({
            "content": [{ "type": "text", "text": "ok" }],
            "stop_reason": "end_turn",
            "usage": {
                "input_tokens": 10, "output_tokens": 3,
                "cache_creation_input_tokens": 100, "cache_read_input_tokens": null,
            },
        });
        let usage = parse_response(&body.to_string()).unwrap().usage;
        assert_eq!(usage.prompt_tokens, 110);
        assert_eq!(usage.completion_tokens, 3);
    }

    #[test]
    fn anthropic_response_rejects_malformed_or_incomplete_bodies() {
        for body in [
            "not json",
            r#"{"content": "text", "usage": {"input_tokens": 1, "output_tokens": 1}}"#,
            r#"{"content": [], "stop_reason": "end_turn"}"#,
        ] {
            let err = parse_response(body).unwrap_err();
            assert!(
                matches!(err, ProviderError::InvalidResponse(_)),
                "{body}: {err:?}"
            );
        }
    }

    // ------------------------------------------------------------ errors

    fn error_json(kind: &str, message: &str) -> String {
        json!({ "type": "error", "error": { "type": kind, "message": message } }).to_string()
    }

    fn classify(status: u16, body: &str) -> ProviderError {
        classify_error(
            StatusCode::from_u16(status).unwrap(),
            None,
            body.as_bytes(),
            MODEL,
        )
    }

    #[test]
    fn anthropic_errors_are_classified_by_status_and_type() {
        assert_eq!(
            classify(403, &error_json("permission_error", "no access")),
            ProviderError::Unauthorized { status: 403 }
        );
        assert_eq!(
            classify(400, &error_json("not_found_error", "model: claude-9")),
            ProviderError::UnknownModel(MODEL.to_owned())
        );
        assert_eq!(
            classify(
                400,
                &error_json("invalid_request_error", "max_tokens: too big")
            ),
            ProviderError::BadRequest {
                status: 400,
                hint: ""
            }
        );
        assert_eq!(
            classify(413, &error_json("request_too_large", "too large")),
            ProviderError::BadRequest {
                status: 413,
                hint: ""
            }
        );
        assert_eq!(
            classify(500, &error_json("api_error", "Internal server error")),
            ProviderError::Upstream {
                status: 500,
                attempts: 1,
            }
        );
        // A gateway page in front of Anthropic: no error body, but the
        // status still decides.
        assert_eq!(
            classify(502, "<html>Bad Gateway</html>"),
            ProviderError::Upstream {
                status: 502,
                attempts: 1,
            }
        );
        assert_eq!(
            classify(503, ""),
            ProviderError::Upstream {
                status: 503,
                attempts: 1,
            }
        );
        assert!(matches!(
            classify(409, ""),
            ProviderError::BadRequest { status: 409, .. }
        ));
        assert!(matches!(
            classify(302, ""),
            ProviderError::InvalidResponse(_)
        ));
    }

    #[test]
    fn anthropic_errors_never_carry_what_the_server_said() {
        // Whatever answered may echo the key, or be an internal service
        // whose answer a tenant wants to read back.
        for (status, body) in [
            (
                401,
                error_json("authentication_error", &format!("bad key {KEY}")),
            ),
            (400, "x".repeat(5_000)),
            (500, format!("secret internal page {KEY}")),
        ] {
            let shown = classify(status, &body).to_string();
            assert!(!shown.contains(KEY), "{shown}");
            assert!(
                !shown.contains("xxxx") && !shown.contains("internal page"),
                "{shown}"
            );
        }
    }

    #[test]
    fn anthropic_retry_after_is_read_in_seconds() {
        let mut headers = HeaderMap::new();
        assert_eq!(retry_after(&headers), None);
        headers.insert(RETRY_AFTER, HeaderValue::from_static(" 12 "));
        assert_eq!(retry_after(&headers), Some(Duration::from_secs(12)));
        headers.insert(
            RETRY_AFTER,
            HeaderValue::from_static("Wed, 21 Oct 2015 07:28:00 GMT"),
        );
        assert_eq!(retry_after(&headers), None);
    }

    // ------------------------------------------------------- over HTTP

    /// What the fake Anthropic saw of one request.
    #[derive(Debug)]
    struct Seen {
        method: Method,
        path: String,
        headers: axum::http::HeaderMap,
        body: Value,
    }

    /// What the fake Anthropic answers, and what it records.
    #[derive(Clone)]
    struct Canned {
        status: u16,
        headers: Vec<(&'static str, &'static str)>,
        body: String,
        delay: Duration,
        seen: Arc<Mutex<Vec<Seen>>>,
    }

    impl Canned {
        fn new(status: u16, body: impl Into<String>) -> Canned {
            Canned {
                status,
                headers: vec![("content-type", "application/json")],
                body: body.into(),
                delay: Duration::ZERO,
                seen: Arc::default(),
            }
        }
    }

    async fn fake_anthropic(
        State(canned): State<Canned>,
        method: Method,
        uri: Uri,
        headers: axum::http::HeaderMap,
        body: Bytes,
    ) -> Response {
        canned.seen.lock().unwrap().push(Seen {
            method,
            path: uri.path().to_owned(),
            headers,
            body: serde_json::from_slice(&body).unwrap_or(Value::Null),
        });
        tokio::time::sleep(canned.delay).await;
        let mut response = Response::builder().status(canned.status);
        for (name, value) in &canned.headers {
            response = response.header(*name, *value);
        }
        response.body(Body::from(canned.body.clone())).unwrap()
    }

    /// Serves `canned` on a fresh local port; returns the base URL.
    async fn serve(canned: &Canned) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr: SocketAddr = listener.local_addr().unwrap();
        let app = Router::new()
            .fallback(fake_anthropic)
            .with_state(canned.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        format!("http://{addr}/v1")
    }

    fn key() -> ProviderKey {
        ProviderKey {
            api_key: SecretString::from(KEY),
            base_url: None,
        }
    }

    async fn call_with(
        base: &str,
        timeout: Duration,
        request: &ChatRequest,
    ) -> Result<ChatResponse, ProviderError> {
        let http = reqwest::Client::new();
        let endpoint = Endpoint {
            http: &http,
            base,
            timeout,
        };
        chat(endpoint, &key(), request).await
    }

    async fn call(canned: &Canned) -> Result<ChatResponse, ProviderError> {
        let base = serve(canned).await;
        call_with(
            &base,
            Duration::from_secs(5),
            &request(vec![Message::user("hi")]),
        )
        .await
    }

    fn assert_no_key(err: &ProviderError) {
        assert!(!format!("{err:?} {err}").contains(KEY), "{err:?}");
    }

    #[tokio::test]
    async fn anthropic_http_success_with_tool_use() {
        let canned = Canned::new(
            200,
            message_json(
                json!([
                    { "type": "text", "text": "Let me look that up." },
                    { "type": "tool_use", "id": "toolu_01", "name": "get_weather", "input": { "city": "Oslo" } },
                ]),
                "tool_use",
            ),
        );
        let base = serve(&canned).await;
        let mut req = request(vec![Message::user("weather in Oslo?")]);
        req.system = "Be brief.".to_owned();
        req.tools = vec![weather_tool()];

        let response = call_with(&base, Duration::from_secs(5), &req)
            .await
            .unwrap();
        assert_eq!(response.text, "Let me look that up.");
        assert_eq!(response.finish, FinishReason::ToolCalls);
        assert_eq!(response.tool_calls.len(), 1);
        assert_eq!(response.tool_calls[0].id, "toolu_01");
        assert_eq!(response.tool_calls[0].arguments, r#"{"city":"Oslo"}"#);
        assert_eq!(response.usage.prompt_tokens, 42);
        assert_eq!(response.usage.completion_tokens, 7);

        let seen = canned.seen.lock().unwrap();
        assert_eq!(seen.len(), 1, "exactly one attempt");
        let seen = &seen[0];
        assert_eq!(seen.method, Method::POST);
        assert_eq!(seen.path, "/v1/messages");
        assert_eq!(seen.headers["x-api-key"], KEY);
        assert_eq!(seen.headers["anthropic-version"], "2023-06-01");
        assert_eq!(seen.headers["content-type"], "application/json");
        assert_eq!(seen.body, request_body(&req).unwrap());
        assert_eq!(seen.body["model"], MODEL);
        assert_eq!(seen.body["system"], "Be brief.");
        assert_eq!(seen.body["tools"][0]["name"], "get_weather");
    }

    #[tokio::test]
    async fn anthropic_http_401_is_unauthorized() {
        let canned = Canned::new(401, error_json("authentication_error", "invalid x-api-key"));
        let err = call(&canned).await.unwrap_err();
        assert_eq!(err, ProviderError::Unauthorized { status: 401 });
        assert!(!err.is_transient());
        assert_no_key(&err);
    }

    #[tokio::test]
    async fn anthropic_http_429_is_rate_limited_with_retry_after() {
        let mut canned = Canned::new(
            429,
            error_json(
                "rate_limit_error",
                "Number of request tokens has exceeded your rate limit",
            ),
        );
        canned.headers.push(("retry-after", "17"));
        let err = call(&canned).await.unwrap_err();
        assert_eq!(
            err,
            ProviderError::RateLimited {
                attempts: 1,
                retry_after: Some(Duration::from_secs(17)),
            }
        );
        assert!(err.is_transient());
    }

    #[tokio::test]
    async fn anthropic_http_529_overloaded_is_upstream() {
        let canned = Canned::new(529, error_json("overloaded_error", "Overloaded"));
        let err = call(&canned).await.unwrap_err();
        assert_eq!(
            err,
            ProviderError::Upstream {
                status: 529,
                attempts: 1,
            }
        );
        assert!(err.is_transient());
    }

    #[tokio::test]
    async fn anthropic_http_404_model_is_unknown_model() {
        let canned = Canned::new(
            404,
            error_json("not_found_error", &format!("model: {MODEL}")),
        );
        let err = call(&canned).await.unwrap_err();
        assert_eq!(err, ProviderError::UnknownModel(MODEL.to_owned()));
        assert!(!err.is_transient());
    }

    #[tokio::test]
    async fn anthropic_http_malformed_200_is_invalid_response() {
        let canned = Canned::new(200, r#"{"id":"msg_01","content":[{"type":"text""#);
        let err = call(&canned).await.unwrap_err();
        assert!(matches!(err, ProviderError::InvalidResponse(_)), "{err:?}");
        assert!(!err.is_transient());
    }

    #[tokio::test]
    async fn anthropic_http_unreachable_port_is_unreachable() {
        // Bind, learn the port, and close it again: nothing listens there.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let err = call_with(
            &format!("http://{addr}/v1"),
            Duration::from_secs(5),
            &request(vec![Message::user("hi")]),
        )
        .await
        .unwrap_err();
        assert!(matches!(err, ProviderError::Unreachable(_)), "{err:?}");
        assert!(err.is_transient());
        assert_no_key(&err);
    }

    #[tokio::test]
    async fn anthropic_http_slow_answer_is_a_timeout() {
        let mut canned = Canned::new(200, message_json(json!([]), "end_turn"));
        canned.delay = Duration::from_secs(5);
        let base = serve(&canned).await;
        let timeout = Duration::from_millis(200);
        let err = call_with(&base, timeout, &request(vec![Message::user("hi")]))
            .await
            .unwrap_err();
        assert_eq!(err, ProviderError::Timeout(timeout));
    }
}
