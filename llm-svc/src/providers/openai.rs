//! OpenAI-compatible Chat Completions: OpenAI itself and every server that
//! speaks its format (Ollama, vLLM, OpenRouter, LiteLLM, …).
//!
//! `max_tokens` rather than `max_completion_tokens`: every compatible server
//! understands it, while the newer name is OpenAI-only.

use std::time::Duration;

use reqwest::{StatusCode, header::RETRY_AFTER};
use secrecy::ExposeSecret;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{
    ChatRequest, ChatResponse, Endpoint, FinishReason, Message, Part, ProviderError, ProviderKey,
    Role, TokenUsage, ToolCall,
};

fn message_json(m: &Message) -> Value {
    match m.role {
        Role::Tool => json!({
            "role": "tool",
            "tool_call_id": m.tool_call_id.clone().unwrap_or_default(),
            "content": m.text(),
        }),
        Role::Assistant => {
            let mut turn = json!({ "role": "assistant", "content": m.text() });
            if !m.tool_calls.is_empty() {
                turn["tool_calls"] = m
                    .tool_calls
                    .iter()
                    .map(|c| {
                        json!({
                            "id": c.id, "type": "function",
                            "function": { "name": c.name, "arguments": c.arguments },
                        })
                    })
                    .collect();
            }
            turn
        }
        Role::User => {
            let has_images = m.parts.iter().any(|p| matches!(p, Part::ImageUrl(_)));
            // Plain text stays a string: some compatible servers take nothing else.
            let content = if has_images {
                m.parts
                    .iter()
                    .map(|p| match p {
                        Part::Text(t) => json!({ "type": "text", "text": t }),
                        Part::ImageUrl(url) => {
                            json!({ "type": "image_url", "image_url": { "url": url, "detail": "auto" } })
                        }
                    })
                    .collect()
            } else {
                Value::String(m.text())
            };
            json!({ "role": "user", "content": content })
        }
    }
}

/// The request body.
pub fn body(request: &ChatRequest) -> Value {
    let mut messages = Vec::with_capacity(request.messages.len() + 1);
    if !request.system.is_empty() {
        messages.push(json!({ "role": "system", "content": request.system }));
    }
    messages.extend(request.messages.iter().map(message_json));
    let mut body = json!({
        "model": request.model,
        "messages": messages,
        "max_tokens": request.max_tokens,
    });
    if !request.tools.is_empty() {
        body["tools"] = request
            .tools
            .iter()
            .map(|t| {
                json!({
                    "type": "function",
                    "function": { "name": t.name, "description": t.description, "parameters": t.parameters },
                })
            })
            .collect();
    }
    body
}

#[derive(Debug, Deserialize)]
struct Completion {
    choices: Vec<Choice>,
    #[serde(default)]
    usage: Option<Usage>,
}

#[derive(Debug, Deserialize)]
struct Choice {
    message: ReplyMessage,
    #[serde(default)]
    finish_reason: Option<String>,
}

#[derive(Debug, Deserialize)]
struct ReplyMessage {
    #[serde(default)]
    content: Option<String>,
    #[serde(default)]
    tool_calls: Vec<WireToolCall>,
}

#[derive(Debug, Deserialize)]
struct WireToolCall {
    id: String,
    function: WireFunction,
}

#[derive(Debug, Deserialize)]
struct WireFunction {
    name: String,
    #[serde(default)]
    arguments: String,
}

/// Counts as the provider wrote them: any JSON, judged by
/// [`TokenUsage::reported`] (a provider's numbers are untrusted input).
#[derive(Debug, Deserialize)]
struct Usage {
    #[serde(default)]
    prompt_tokens: Value,
    #[serde(default)]
    completion_tokens: Value,
}

/// A successful response body.
pub fn parse(body: &[u8]) -> Result<ChatResponse, ProviderError> {
    let completion: Completion = serde_json::from_slice(body)
        .map_err(|_| ProviderError::InvalidResponse("not a chat completion"))?;
    let choice = completion
        .choices
        .into_iter()
        .next()
        .ok_or(ProviderError::InvalidResponse("no choices"))?;
    let finish = match choice.finish_reason.as_deref() {
        Some("stop") => FinishReason::Stop,
        Some("tool_calls" | "function_call") => FinishReason::ToolCalls,
        Some("length") => FinishReason::Length,
        Some("content_filter") => FinishReason::ContentFilter,
        // Some servers omit it or use their own words; tool calls speak for themselves.
        _ if !choice.message.tool_calls.is_empty() => FinishReason::ToolCalls,
        _ => FinishReason::Other,
    };
    Ok(ChatResponse {
        text: choice.message.content.unwrap_or_default(),
        tool_calls: choice
            .message
            .tool_calls
            .into_iter()
            .map(|c| ToolCall {
                id: c.id,
                name: c.function.name,
                arguments: c.function.arguments,
            })
            .collect(),
        usage: completion
            .usage
            .map(|u| TokenUsage::reported(&u.prompt_tokens, &u.completion_tokens, &[]))
            .unwrap_or_default(),
        finish,
    })
}

#[derive(Debug, Deserialize)]
struct ErrorEnvelope {
    error: WireError,
}

#[derive(Debug, Deserialize)]
struct WireError {
    #[serde(default)]
    message: String,
    #[serde(default)]
    code: Option<Value>,
}

/// A failed response, classified so only what may pass is retried. The
/// body is read to classify, never kept: it may be anything.
pub fn classify(
    status: StatusCode,
    retry_after: Option<Duration>,
    body: &[u8],
    model: &str,
) -> ProviderError {
    let (names_model, code) = match serde_json::from_slice::<ErrorEnvelope>(body) {
        Ok(e) => (
            !model.is_empty() && e.error.message.contains(model),
            e.error
                .code
                .and_then(|c| c.as_str().map(str::to_owned))
                .unwrap_or_default(),
        ),
        Err(_) => (false, String::new()),
    };
    match status.as_u16() {
        s @ (401 | 403) => ProviderError::Unauthorized { status: s },
        // Out of credit is a 429 too, but waiting will not fix it.
        429 if code == "insufficient_quota" => ProviderError::BadRequest {
            status: 429,
            hint: "; the key is out of credit",
        },
        429 => ProviderError::RateLimited {
            attempts: 1,
            retry_after,
        },
        404 | 400 if code == "model_not_found" || names_model => {
            ProviderError::UnknownModel(model.to_owned())
        }
        // Any other 404 is the path: usually a base URL without `/v1`.
        404 => ProviderError::BadRequest {
            status: 404,
            hint: "; check the key's base URL",
        },
        s if s >= 500 => ProviderError::Upstream {
            status: s,
            attempts: 1,
        },
        s @ 400..=499 => ProviderError::BadRequest {
            status: s,
            hint: "",
        },
        s => ProviderError::unexpected_status(s),
    }
}

/// `Retry-After` in seconds (the form providers send). Any value is
/// accepted without panicking; the retry policy caps the wait.
pub(crate) fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let seconds = headers
        .get(RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse::<f64>()
        .ok()
        .filter(|s| s.is_finite() && *s >= 0.0)?;
    Duration::try_from_secs_f64(seconds).ok()
}

/// One attempt.
pub async fn chat(
    endpoint: Endpoint<'_>,
    key: &ProviderKey,
    request: &ChatRequest,
) -> Result<ChatResponse, ProviderError> {
    let response = endpoint
        .http
        .post(format!("{}/chat/completions", endpoint.base))
        .bearer_auth(key.api_key.expose_secret())
        .json(&body(request))
        .send()
        .await
        .map_err(|e| super::transport_error(&e, endpoint.timeout))?;
    let status = response.status();
    let wait = retry_after(response.headers());
    let bytes = super::read_body(response, endpoint.timeout).await?;
    if status.is_success() {
        parse(&bytes)
    } else {
        Err(classify(status, wait, &bytes, &request.model))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::ToolSpec;

    fn request() -> ChatRequest {
        let mut with_image = Message::user("what is on this receipt?");
        with_image
            .parts
            .push(Part::ImageUrl("https://s3.example/r.png".into()));
        let mut called = Message::assistant("");
        called.tool_calls.push(ToolCall {
            id: "call_1".into(),
            name: "order_lookup".into(),
            arguments: r#"{"order":"A-1"}"#.into(),
        });
        ChatRequest {
            model: "gpt-4o-mini".into(),
            system: "You are Ava.".into(),
            messages: vec![
                Message::user("hi"),
                with_image,
                called,
                Message::tool_result("call_1", "shipped"),
            ],
            tools: vec![ToolSpec {
                name: "order_lookup".into(),
                description: "Find an order".into(),
                parameters: json!({ "type": "object", "properties": { "order": { "type": "string" } } }),
            }],
            max_tokens: 512,
        }
    }

    #[test]
    fn the_body_speaks_chat_completions() {
        let body = body(&request());
        assert_eq!(body["model"], "gpt-4o-mini");
        assert_eq!(body["max_tokens"], 512);
        let messages = body["messages"].as_array().unwrap();
        assert_eq!(
            messages[0],
            json!({ "role": "system", "content": "You are Ava." })
        );
        assert_eq!(messages[1], json!({ "role": "user", "content": "hi" }));
        assert_eq!(
            messages[2]["content"][1],
            json!({ "type": "image_url", "image_url": { "url": "https://s3.example/r.png", "detail": "auto" } })
        );
        assert_eq!(
            messages[3]["tool_calls"][0],
            json!({ "id": "call_1", "type": "function",
                    "function": { "name": "order_lookup", "arguments": "{\"order\":\"A-1\"}" } })
        );
        assert_eq!(
            messages[4],
            json!({ "role": "tool", "tool_call_id": "call_1", "content": "shipped" })
        );
        assert_eq!(body["tools"][0]["type"], "function");
        assert_eq!(body["tools"][0]["function"]["name"], "order_lookup");

        let bare = super::body(&ChatRequest {
            system: String::new(),
            tools: vec![],
            ..request()
        });
        assert_eq!(bare["messages"][0]["role"], "user");
        assert!(bare.get("tools").is_none());
    }

    #[test]
    fn responses_and_errors_are_read_precisely() {
        let reply = parse(
            br#"{"id":"chatcmpl-1","object":"chat.completion","choices":[{"index":0,
                "message":{"role":"assistant","content":null,"tool_calls":[{"id":"call_9","type":"function",
                "function":{"name":"order_lookup","arguments":"{\"order\":\"A-1\"}"}}]},
                "finish_reason":"tool_calls"}],"usage":{"prompt_tokens":50,"completion_tokens":12,"total_tokens":62}}"#,
        )
        .unwrap();
        assert_eq!(reply.finish, FinishReason::ToolCalls);
        assert_eq!(reply.text, "");
        assert_eq!(reply.tool_calls[0].arguments, r#"{"order":"A-1"}"#);
        assert_eq!(
            reply.usage,
            TokenUsage {
                prompt_tokens: 50,
                completion_tokens: 12
            }
        );
        assert!(matches!(
            parse(br#"{"choices":[]}"#),
            Err(ProviderError::InvalidResponse(_))
        ));
        assert!(matches!(
            parse(b"<html>"),
            Err(ProviderError::InvalidResponse(_))
        ));

        let err = |status: u16, body: &str| {
            classify(
                StatusCode::from_u16(status).unwrap(),
                Some(Duration::from_secs(3)),
                body.as_bytes(),
                "gpt-x",
            )
        };
        assert!(matches!(
            err(
                401,
                r#"{"error":{"message":"Incorrect API key provided","code":"invalid_api_key"}}"#
            ),
            ProviderError::Unauthorized { status: 401 }
        ));
        assert_eq!(
            err(
                429,
                r#"{"error":{"message":"Rate limit reached","code":"rate_limit_exceeded"}}"#
            ),
            ProviderError::RateLimited {
                attempts: 1,
                retry_after: Some(Duration::from_secs(3))
            }
        );
        assert!(!err(429, r#"{"error":{"message":"You exceeded your current quota","code":"insufficient_quota"}}"#).is_transient());
        assert_eq!(
            err(
                404,
                r#"{"error":{"message":"The model does not exist","code":"model_not_found"}}"#
            ),
            ProviderError::UnknownModel("gpt-x".into())
        );
        assert_eq!(
            err(
                404,
                r#"{"error":{"message":"model \"gpt-x\" not found, try pulling it first"}}"#
            ),
            ProviderError::UnknownModel("gpt-x".into())
        );
        assert!(matches!(
            err(404, "404 page not found"),
            ProviderError::BadRequest { status: 404, hint } if hint.contains("base URL")
        ));
        assert!(err(502, "Bad gateway").is_transient());
        assert!(matches!(
            err(
                400,
                r#"{"error":{"message":"Invalid schema for function"}}"#
            ),
            ProviderError::BadRequest { status: 400, .. }
        ));
        assert!(matches!(err(302, ""), ProviderError::InvalidResponse(_)));
    }

    #[test]
    fn untrusted_numbers_never_panic_or_overflow() {
        let mut headers = reqwest::header::HeaderMap::new();
        for (value, expected) in [
            ("3", Some(Duration::from_secs(3))),
            ("0.5", Some(Duration::from_millis(500))),
            ("1e300", None),
            ("-1", None),
            ("NaN", None),
            ("inf", None),
        ] {
            headers.insert(RETRY_AFTER, value.parse().unwrap());
            assert_eq!(retry_after(&headers), expected, "{value}");
        }
        let usage = |u: &str| {
            parse(
                format!(r#"{{"choices":[{{"message":{{"content":"hi"}}}}],"usage":{u}}}"#)
                    .as_bytes(),
            )
            .unwrap()
            .usage
        };
        assert_eq!(
            usage(r#"{"prompt_tokens":-5,"completion_tokens":-1}"#),
            TokenUsage::default(),
            "negative counts are nothing"
        );
        let huge = usage(r#"{"prompt_tokens":1e30,"completion_tokens":18446744073709551615}"#);
        assert_eq!(huge.prompt_tokens, super::super::MAX_REPORTED_TOKENS);
        assert_eq!(huge.completion_tokens, super::super::MAX_REPORTED_TOKENS);
        assert_eq!(
            usage(r#"{"prompt_tokens":"12","completion_tokens":null}"#),
            TokenUsage::default(),
            "what is not a number counts as nothing"
        );
    }
}
