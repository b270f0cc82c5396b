//! The inbound queue's handler: a customer's Slack or WhatsApp message
//! becomes an agent run and a reply on the outbound queue.
//!
//! Exactly one reply per message id: the run is idempotent on the message
//! id (a redelivered message whose answer is recorded gets that answer
//! again, without the provider), the reply's id derives from the message's,
//! and the gateway delivers each reply id once. The provider is called again
//! only when an earlier attempt died before it recorded an answer.

use crewmesh_proto::{
    agent::v1::{
        Channel as ProtoChannel, ResolveChannelRequest,
        agent_internal_service_client::AgentInternalServiceClient,
    },
    media::v1::{
        IngestChannelMediaRequest, media_internal_service_client::MediaInternalServiceClient,
    },
    messaging::v1::{
        AttachmentKind as ProtoKind, InboundMessage, OutboundKind, OutboundMessage, ReplyTarget,
        reply_target::Target,
    },
};
use mesh_kit::{ErrorCode, auth::TokenSigner, client::CallContext};
use prost::Message as _;
use streamq::{Delivery, Entry, Handler, Outcome, ProduceError, Producer};
use tonic::{Status, transport::Channel};
use uuid::Uuid;

use crate::{
    providers::vision::AttachmentKind,
    run::{AttachmentRef, ConversationRef, RunChannel, RunInput, RunOutput, Runner},
};

/// Meta's customer service window: free-form replies only this long after
/// the customer's last message. Meta redelivers webhooks for days, so a
/// message older than this is recorded and not answered.
pub const WHATSAPP_WINDOW_SECS: i64 = 24 * 3600;

/// What a customer reads when the model gave back nothing at all.
const EMPTY_ANSWER: &str = "I'm sorry, I don't have an answer to that. Could you rephrase it?";

#[derive(Clone)]
pub struct InboundWorker {
    pub runner: Runner,
    pub outbound: Producer,
    pub agents: AgentInternalServiceClient<Channel>,
    pub media: MediaInternalServiceClient<Channel>,
    pub signer: TokenSigner,
}

impl std::fmt::Debug for InboundWorker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InboundWorker").finish_non_exhaustive()
    }
}

/// Why handling stopped short of a reply.
#[derive(Debug, thiserror::Error)]
enum HandleError {
    /// Will never work: the message goes to the dead-letter stream.
    #[error("{reason}: {detail}")]
    Permanent {
        reason: &'static str,
        detail: String,
    },
    /// A dependency is down: try again later, in order.
    #[error("{0}")]
    Transient(String),
}

fn permanent(reason: &'static str, detail: impl Into<String>) -> HandleError {
    HandleError::Permanent {
        reason,
        detail: detail.into(),
    }
}

impl From<ProduceError> for HandleError {
    fn from(e: ProduceError) -> HandleError {
        HandleError::Transient(format!("queueing the reply: {e}"))
    }
}

/// A failed call to another service or the database, classed by its code.
fn status_error(what: &str, status: &Status) -> HandleError {
    match ErrorCode::of_status(status) {
        // Internal covers a database that went away mid-call: worth another try.
        ErrorCode::Unavailable
        | ErrorCode::Internal
        | ErrorCode::DeadlineExceeded
        | ErrorCode::ResourceExhausted => {
            HandleError::Transient(format!("{what}: {}", status.message()))
        }
        ErrorCode::InvalidArgument
        | ErrorCode::NotFound
        | ErrorCode::Conflict
        | ErrorCode::FailedPrecondition
        | ErrorCode::PermissionDenied
        | ErrorCode::Unauthenticated => {
            permanent("run_failed", format!("{what}: {}", status.message()))
        }
    }
}

impl Handler for InboundWorker {
    async fn handle(&self, delivery: &Delivery) -> Outcome {
        let message = match InboundMessage::decode(delivery.payload.as_slice()) {
            Ok(message) => message,
            Err(e) => return Outcome::dead_letter("malformed_message", e.to_string()),
        };
        match self.answer(message).await {
            Ok(()) => Outcome::Done,
            Err(HandleError::Transient(reason)) => Outcome::retry(reason),
            Err(HandleError::Permanent { reason, detail }) => Outcome::dead_letter(reason, detail),
        }
    }
}

impl InboundWorker {
    fn call(&self, message: &InboundMessage) -> Result<CallContext, HandleError> {
        let token = self
            .signer
            .service_token()
            .map_err(|e| HandleError::Transient(format!("signing llm-svc's token: {e}")))?;
        Ok(CallContext::new(
            token,
            Some(message.traceparent.clone()).filter(|t| !t.is_empty()),
        ))
    }

    async fn answer(&self, message: InboundMessage) -> Result<(), HandleError> {
        let tenant: Uuid = message
            .tenant_id
            .parse()
            .map_err(|_| permanent("malformed_message", "tenant_id is not a UUID"))?;
        let agent: Uuid = message
            .agent_id
            .parse()
            .map_err(|_| permanent("malformed_message", "agent_id is not a UUID"))?;
        let channel = match message.channel() {
            ProtoChannel::Slack => RunChannel::Slack,
            ProtoChannel::Whatsapp => RunChannel::Whatsapp,
            ProtoChannel::Api | ProtoChannel::Unspecified => {
                return Err(permanent("malformed_message", "not a channel message"));
            }
        };
        let mut input = RunInput {
            tenant,
            agent,
            channel,
            conversation: ConversationRef::Channel(message.conversation.clone()),
            text: message.text.clone(),
            attachments: Vec::new(),
            request_id: Some(message.id.clone()),
            traceparent: Some(message.traceparent.clone()).filter(|t| !t.is_empty()),
        };

        // Answered before this delivery (a crash after the run, a retried
        // dead letter): the same answer again, no provider call.
        if let Some(output) = self
            .runner
            .answered(tenant, agent, &message.id)
            .await
            .map_err(|s| status_error("reading the conversation", &s))?
        {
            return self.reply(&message, &output).await;
        }

        if channel == RunChannel::Whatsapp
            && chrono::Utc::now().timestamp() - message.sent_at > WHATSAPP_WINDOW_SECS
        {
            let recorded = self
                .runner
                .record_unanswered(&input, "outside_customer_service_window")
                .await
                .map_err(|s| status_error("recording the message", &s))?;
            if recorded {
                tracing::info!(id = %message.id, %tenant, "WhatsApp message older than the customer service window: recorded, not answered");
            }
            return Ok(());
        }

        if channel == RunChannel::Slack {
            self.placeholder(&message).await?;
        }
        input.attachments = self.ingest(&message).await?;
        let output = self
            .runner
            .run(input)
            .await
            .map_err(|s| status_error("running the agent", &s))?;
        self.reply(&message, &output).await
    }

    /// "Working on it…" in the Slack thread, as soon as the message is
    /// picked up; the gateway posts it once and later edits it into the answer.
    async fn placeholder(&self, message: &InboundMessage) -> Result<(), HandleError> {
        self.send(&OutboundMessage {
            id: format!("{}:placeholder", message.id),
            tenant_id: message.tenant_id.clone(),
            inbound_id: message.id.clone(),
            kind: OutboundKind::Placeholder.into(),
            text: String::new(),
            reply_to: message.reply_to.clone(),
            conversation: message.conversation.clone(),
            customer_last_message_at: message.sent_at,
            received_at_ms: message.received_at_ms,
            traceparent: message.traceparent.clone(),
            refusal_reason: String::new(),
            conversation_id: String::new(),
        })
        .await
    }

    async fn reply(&self, message: &InboundMessage, output: &RunOutput) -> Result<(), HandleError> {
        let text = if output.reply.trim().is_empty() {
            EMPTY_ANSWER.to_owned()
        } else {
            output.reply.clone()
        };
        self.send(&OutboundMessage {
            id: format!("{}:reply", message.id),
            tenant_id: message.tenant_id.clone(),
            inbound_id: message.id.clone(),
            kind: OutboundKind::Reply.into(),
            text,
            reply_to: message.reply_to.clone(),
            conversation: message.conversation.clone(),
            customer_last_message_at: message.sent_at,
            received_at_ms: message.received_at_ms,
            traceparent: message.traceparent.clone(),
            refusal_reason: output.refusal_reason.clone(),
            conversation_id: output.conversation.to_string(),
        })
        .await
    }

    async fn send(&self, outbound: &OutboundMessage) -> Result<(), HandleError> {
        let payload = outbound.encode_to_vec();
        self.outbound
            .append(&Entry {
                id: &outbound.id,
                key: &outbound.conversation,
                payload: &payload,
            })
            .await?;
        Ok(())
    }

    /// The message's files, stored in media storage with the connection's
    /// token. A file the channel will not hand over (gone, too big, a type
    /// we do not keep) is skipped with a note, not a failed message.
    async fn ingest(&self, message: &InboundMessage) -> Result<Vec<AttachmentRef>, HandleError> {
        if message.attachments.is_empty() {
            return Ok(Vec::new());
        }
        let (channel, source, external_id) = match &message.reply_to {
            Some(ReplyTarget {
                target: Some(Target::Slack(slack)),
            }) => (ProtoChannel::Slack, "slack", slack.team_id.clone()),
            Some(ReplyTarget {
                target: Some(Target::Whatsapp(whatsapp)),
            }) => (
                ProtoChannel::Whatsapp,
                "whatsapp",
                whatsapp.phone_number_id.clone(),
            ),
            Some(ReplyTarget { target: None }) | None => {
                return Err(permanent("malformed_message", "no reply target"));
            }
        };
        let connection = self
            .agents
            .clone()
            .resolve_channel(self.call(message)?.request(ResolveChannelRequest {
                channel: channel.into(),
                external_id,
            }))
            .await;
        let token = match connection {
            Ok(c) if c.get_ref().tenant_id == message.tenant_id => c.into_inner().access_token,
            Ok(_) => {
                tracing::info!(id = %message.id, "the channel changed hands; its files are not fetched");
                return Ok(Vec::new());
            }
            Err(s) if ErrorCode::of_status(&s) == ErrorCode::NotFound => {
                tracing::info!(id = %message.id, "the channel was disconnected; its files are not fetched");
                return Ok(Vec::new());
            }
            Err(s) => return Err(status_error("resolving the channel", &s)),
        };
        let mut refs = Vec::with_capacity(message.attachments.len());
        for (i, attachment) in message.attachments.iter().enumerate() {
            let ingested = self
                .media
                .clone()
                .ingest_channel_media(self.call(message)?.request(IngestChannelMediaRequest {
                    tenant_id: message.tenant_id.clone(),
                    channel: source.to_owned(),
                    reference: attachment.reference.clone(),
                    access_token: token.clone(),
                    expected_mime_type: attachment.mime_type.clone(),
                    message_id: format!("{}#{i}", message.id),
                }))
                .await;
            let media = match ingested {
                Ok(response) => response.into_inner().media,
                Err(s) => match status_error("ingesting a file", &s) {
                    HandleError::Transient(reason) => return Err(HandleError::Transient(reason)),
                    HandleError::Permanent { detail, .. } => {
                        tracing::info!(id = %message.id, %detail, "a file of the message was skipped");
                        continue;
                    }
                },
            };
            let Some(media_id) = media.and_then(|m| m.id.parse().ok()) else {
                continue;
            };
            let kind = match attachment.kind() {
                ProtoKind::Image | ProtoKind::Sticker => AttachmentKind::Image,
                ProtoKind::Document | ProtoKind::Unspecified => AttachmentKind::Document,
                ProtoKind::Audio => AttachmentKind::Audio,
                ProtoKind::Video => AttachmentKind::Video,
            };
            refs.push(AttachmentRef {
                kind,
                media_id,
                filename: attachment.filename.clone(),
                caption: attachment.caption.clone(),
            });
        }
        Ok(refs)
    }
}
