//! Provider adapters (L1): one chat call in our own terms, spoken to an
//! OpenAI-compatible server (OpenAI, Ollama, vLLM, OpenRouter, any base URL)
//! or to Anthropic's Messages API, on the tenant's own key.
//!
//! Every call has a timeout; 429, 5xx, timeouts and refused connections are
//! retried a bounded number of times with exponential backoff (honouring
//! `Retry-After`); every failure surfaces as a [`ProviderError`] that says
//! what went wrong in words an admin can act on.

pub mod anthropic;
pub mod openai;
pub mod retry;
pub mod vision;

use std::time::Duration;

use mesh_kit::egress::EgressPolicy;
use secrecy::SecretString;
use serde_json::Value;

/// Which wire format a provider prefix speaks, and its default base URL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wire {
    OpenAi,
    Anthropic,
}

/// `openai/gpt-4o-mini` → (`openai`, `gpt-4o-mini`). Model names may contain
/// slashes themselves (`openrouter/meta-llama/llama-3-70b`): only the first
/// one separates the provider.
pub fn split_model(model: &str) -> Option<(&str, &str)> {
    let (provider, name) = model.split_once('/')?;
    (!provider.is_empty() && !name.is_empty()).then_some((provider, name))
}

/// The wire and default base URL of a provider prefix. Unknown prefixes are
/// OpenAI-compatible and need the key's own `base_url`.
pub fn wire_of(provider: &str) -> (Wire, Option<&'static str>) {
    match provider {
        "anthropic" => (Wire::Anthropic, Some("https://api.anthropic.com/v1")),
        "openai" => (Wire::OpenAi, Some("https://api.openai.com/v1")),
        "openrouter" => (Wire::OpenAi, Some("https://openrouter.ai/api/v1")),
        "ollama" => (Wire::OpenAi, Some("http://127.0.0.1:11434/v1")),
        "groq" => (Wire::OpenAi, Some("https://api.groq.com/openai/v1")),
        "mistral" => (Wire::OpenAi, Some("https://api.mistral.ai/v1")),
        _ => (Wire::OpenAi, None),
    }
}

/// The tenant's credentials for one provider (from billing-svc).
#[derive(Debug, Clone)]
pub struct ProviderKey {
    pub api_key: SecretString,
    /// Overrides the provider's default, e.g. a local vLLM.
    pub base_url: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    User,
    Assistant,
    /// The result of a tool call, answering `tool_call_id`.
    Tool,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Part {
    Text(String),
    /// An image the model fetches itself (a presigned URL).
    ImageUrl(String),
}

#[derive(Debug, Clone, PartialEq)]
pub struct ToolCall {
    /// The provider's id, echoed back with the result.
    pub id: String,
    pub name: String,
    /// The arguments as the model wrote them. Kept raw: invalid JSON is the
    /// tool loop's to report back to the model, not a transport error.
    pub arguments: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    pub role: Role,
    pub parts: Vec<Part>,
    /// Assistant turns that called tools.
    pub tool_calls: Vec<ToolCall>,
    /// Tool turns: the call this answers.
    pub tool_call_id: Option<String>,
}

impl Message {
    pub fn user(text: impl Into<String>) -> Message {
        Message {
            role: Role::User,
            parts: vec![Part::Text(text.into())],
            tool_calls: vec![],
            tool_call_id: None,
        }
    }

    pub fn assistant(text: impl Into<String>) -> Message {
        Message {
            role: Role::Assistant,
            ..Message::user(text)
        }
    }

    pub fn tool_result(call_id: impl Into<String>, text: impl Into<String>) -> Message {
        Message {
            role: Role::Tool,
            tool_call_id: Some(call_id.into()),
            ..Message::user(text)
        }
    }

    /// The text parts joined, for wires that take text only.
    pub fn text(&self) -> String {
        self.parts
            .iter()
            .filter_map(|p| match p {
                Part::Text(t) => Some(t.as_str()),
                Part::ImageUrl(_) => None,
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// A tool the model may call, with a JSON Schema for its arguments.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolSpec {
    pub name: String,
    pub description: String,
    pub parameters: Value,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ChatRequest {
    /// Without the provider prefix.
    pub model: String,
    pub system: String,
    pub messages: Vec<Message>,
    pub tools: Vec<ToolSpec>,
    pub max_tokens: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TokenUsage {
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
}

/// The most tokens one call is believed to use, per side: far above any
/// context window, far below what could overflow a price computation.
pub const MAX_REPORTED_TOKENS: i64 = 100_000_000;

/// One count as a provider reported it: a whole number between 0 and
/// [`MAX_REPORTED_TOKENS`]; anything else (negative, fractional, a string,
/// astronomically large) is clamped into that range rather than trusted.
fn reported_count(value: &Value) -> i64 {
    let count = match value {
        Value::Number(n) => n
            .as_i64()
            .or_else(|| n.as_u64().map(|u| i64::try_from(u).unwrap_or(i64::MAX)))
            .or_else(|| {
                n.as_f64()
                    .filter(|f| f.is_finite())
                    .map(|f| f.clamp(0.0, MAX_REPORTED_TOKENS as f64) as i64)
            })
            .unwrap_or(MAX_REPORTED_TOKENS),
        _ => 0,
    };
    count.clamp(0, MAX_REPORTED_TOKENS)
}

impl TokenUsage {
    /// Usage from a provider's own numbers: input and output tokens, and any
    /// further input counts it reports apart (Anthropic's cache reads and
    /// writes), summed without overflow and clamped, so a broken or hostile
    /// provider cannot make settlement fail or a budget go negative.
    pub fn reported(prompt: &Value, completion: &Value, more_prompt: &[&Value]) -> TokenUsage {
        let prompt = more_prompt
            .iter()
            .fold(reported_count(prompt), |sum, v| {
                sum.saturating_add(reported_count(v))
            })
            .min(MAX_REPORTED_TOKENS);
        TokenUsage {
            prompt_tokens: prompt,
            completion_tokens: reported_count(completion),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishReason {
    Stop,
    ToolCalls,
    /// Cut at `max_tokens`.
    Length,
    /// Withheld by the provider's content filter.
    ContentFilter,
    Other,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ChatResponse {
    pub text: String,
    pub tool_calls: Vec<ToolCall>,
    pub usage: TokenUsage,
    pub finish: FinishReason,
}

/// What went wrong, in our words only. A provider's (or an impostor's)
/// error body, a URL and a key never get in here: these messages reach API
/// callers and log lines, and a tenant-chosen base URL could otherwise read
/// back whatever an internal service answered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProviderError {
    #[error(
        "the provider refused the tenant's API key (HTTP {status}); check the key under LLM keys"
    )]
    Unauthorized { status: u16 },
    #[error("the stored key cannot be sent in an HTTP header; store it again under LLM keys")]
    InvalidKey,
    #[error("the provider is rate limiting this key; retried {attempts} times")]
    RateLimited {
        attempts: u32,
        retry_after: Option<Duration>,
    },
    #[error("the provider rejected the request (HTTP {status}){hint}")]
    BadRequest {
        status: u16,
        /// Our own advice, e.g. "; check the key's base URL".
        hint: &'static str,
    },
    #[error("the request could not be built: {0}")]
    Malformed(&'static str),
    #[error("the provider has no model `{0}`; check the agent's model")]
    UnknownModel(String),
    #[error("the provider failed (HTTP {status}) after {attempts} attempts")]
    Upstream { status: u16, attempts: u32 },
    #[error("the provider did not answer within {0:?}")]
    Timeout(Duration),
    #[error("the provider could not be reached ({0})")]
    Unreachable(&'static str),
    #[error("the provider answered in an unexpected shape ({0})")]
    InvalidResponse(&'static str),
    #[error("provider `{0}` needs a base URL: store the key with one")]
    NoBaseUrl(String),
    #[error("the key's base URL {0}")]
    Forbidden(mesh_kit::egress::EgressError),
}

impl ProviderError {
    /// The HTTP status of an answer that is neither success nor ours to
    /// read: a redirect (never followed: it could lead anywhere) or anything
    /// unexpected.
    pub(crate) fn unexpected_status(status: u16) -> ProviderError {
        if (300..400).contains(&status) {
            ProviderError::InvalidResponse("a redirect, which is not followed")
        } else {
            ProviderError::InvalidResponse("an unexpected HTTP status")
        }
    }

    /// Whether another attempt may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            ProviderError::RateLimited { .. }
                | ProviderError::Upstream { .. }
                | ProviderError::Timeout(_)
                | ProviderError::Unreachable(_)
        )
    }
}

/// Where one call goes: the shared client, the provider's base URL (no
/// trailing slash) and the per-call timeout the client enforces.
#[derive(Debug, Clone, Copy)]
pub struct Endpoint<'a> {
    pub http: &'a reqwest::Client,
    pub base: &'a str,
    pub timeout: Duration,
}

/// Calls providers over HTTP with one shared connection pool.
#[derive(Debug, Clone)]
pub struct Providers {
    http: reqwest::Client,
    timeout: Duration,
    retry: retry::Policy,
    /// Base URLs are the tenant's choice: every call goes through it.
    egress: EgressPolicy,
}

impl Providers {
    pub fn new(
        timeout: Duration,
        retry: retry::Policy,
        egress: EgressPolicy,
    ) -> Result<Providers, reqwest::Error> {
        let retry = retry::Policy {
            attempt_timeout: timeout,
            ..retry
        };
        Ok(Providers {
            http: egress.client(
                reqwest::Client::builder()
                    .connect_timeout(Duration::from_secs(5))
                    .timeout(timeout),
            )?,
            timeout,
            retry,
            egress,
        })
    }

    /// One chat completion for `model` (`provider/name`) on `key`.
    pub async fn chat(
        &self,
        provider: &str,
        key: &ProviderKey,
        request: &ChatRequest,
    ) -> Result<ChatResponse, ProviderError> {
        let (wire, default_base) = wire_of(provider);
        let base = key
            .base_url
            .as_deref()
            .or(default_base)
            .ok_or_else(|| ProviderError::NoBaseUrl(provider.to_owned()))?
            .trim_end_matches('/')
            .to_owned();
        // IP literals are judged here (the client's resolver sees only names).
        self.egress
            .check_url(&base, false)
            .map_err(ProviderError::Forbidden)?;
        let endpoint = Endpoint {
            http: &self.http,
            base: &base,
            timeout: self.timeout,
        };
        self.retry
            .run(|| async {
                match wire {
                    Wire::OpenAi => openai::chat(endpoint, key, request).await,
                    Wire::Anthropic => anthropic::chat(endpoint, key, request).await,
                }
            })
            .await
    }
}

/// Maps a transport failure to our error. reqwest's own message names the
/// URL, so only its kind is kept.
pub(crate) fn transport_error(e: &reqwest::Error, timeout: Duration) -> ProviderError {
    if mesh_kit::egress::is_forbidden(e) {
        ProviderError::Forbidden(mesh_kit::egress::EgressError::Forbidden)
    } else if e.is_timeout() {
        ProviderError::Timeout(timeout)
    } else if e.is_connect() {
        ProviderError::Unreachable("connection failed")
    } else if e.is_redirect() {
        ProviderError::InvalidResponse("a redirect, which is not followed")
    } else if e.is_body() || e.is_decode() {
        ProviderError::Unreachable("the answer was cut off")
    } else {
        ProviderError::Unreachable("request failed")
    }
}

/// A response body, at most [`mesh_kit::egress::MAX_RESPONSE_BYTES`].
pub(crate) async fn read_body(
    response: reqwest::Response,
    timeout: Duration,
) -> Result<Vec<u8>, ProviderError> {
    mesh_kit::egress::read_capped(response, mesh_kit::egress::MAX_RESPONSE_BYTES)
        .await
        .map_err(|e| match e {
            mesh_kit::egress::ReadError::TooLarge => {
                ProviderError::InvalidResponse("larger than the 4 MiB an answer may be")
            }
            mesh_kit::egress::ReadError::Transport(e) => transport_error(&e, timeout),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_strings_carry_the_provider_prefix() {
        assert_eq!(
            split_model("openai/gpt-4o-mini"),
            Some(("openai", "gpt-4o-mini"))
        );
        assert_eq!(
            split_model("openrouter/meta-llama/llama-3-70b"),
            Some(("openrouter", "meta-llama/llama-3-70b"))
        );
        assert_eq!(split_model("gpt-4o"), None);
        assert_eq!(split_model("/gpt-4o"), None);
        assert_eq!(split_model("openai/"), None);
        assert_eq!(wire_of("anthropic").0, Wire::Anthropic);
        assert_eq!(wire_of("vllm"), (Wire::OpenAi, None));
    }
}
