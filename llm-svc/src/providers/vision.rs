//! Which models see images (L2), and how an attachment reaches a model.

use super::Part;

/// Model families that accept image input, by name prefix after the provider.
const VISION_PREFIXES: &[&str] = &[
    "claude-3",
    "gpt-4o",
    "gpt-4-vision",
    "gemini-pro-vision",
    "gemini-1.5",
    "gemini-2",
];

/// Whether `model` (with or without its `provider/` prefix) takes images.
/// Only the first slash is a provider prefix: `openrouter/openai/gpt-4o` is
/// judged on `openai/gpt-4o`, then on `gpt-4o`.
pub fn supports_vision(model: &str) -> bool {
    let mut name = model.trim();
    loop {
        let lower = name.to_ascii_lowercase();
        if VISION_PREFIXES.iter().any(|p| lower.starts_with(p)) {
            return true;
        }
        match name.split_once('/') {
            Some((_, rest)) if !rest.is_empty() => name = rest,
            _ => return false,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttachmentKind {
    Image,
    Document,
    /// A voice note or other audio: no model here listens, so a reference.
    Audio,
    Video,
}

/// An attachment as the model receives it: an image block (the provider
/// fetches the presigned URL) for vision models, otherwise a text reference.
pub fn attachment_part(
    model: &str,
    kind: AttachmentKind,
    url: &str,
    filename: &str,
    caption: &str,
) -> Part {
    let name = if filename.is_empty() {
        "unnamed"
    } else {
        filename
    };
    let caption = if caption.is_empty() {
        String::new()
    } else {
        format!(" Caption: {caption}")
    };
    match kind {
        AttachmentKind::Image if supports_vision(model) => Part::ImageUrl(url.to_owned()),
        AttachmentKind::Image => Part::Text(format!(
            "[The customer sent an image ({name}) that this model cannot view.{caption} It is at {url}]"
        )),
        AttachmentKind::Document => Part::Text(format!(
            "[The customer sent a document: {name}.{caption} It can be downloaded from {url}]"
        )),
        AttachmentKind::Audio => Part::Text(format!(
            "[The customer sent an audio message that this model cannot hear.{caption} It is at {url}]"
        )),
        AttachmentKind::Video => Part::Text(format!(
            "[The customer sent a video that this model cannot watch.{caption} It is at {url}]"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vision_models_are_recognised_with_or_without_their_prefix() {
        for yes in [
            "anthropic/claude-3-5-haiku",
            "claude-3-opus-20240229",
            "openai/gpt-4o-mini",
            "gpt-4o",
            "openai/gpt-4-vision-preview",
            "google/gemini-pro-vision",
            "gemini-1.5-flash",
            "openrouter/google/gemini-2.0-flash",
            "openrouter/openai/GPT-4o",
        ] {
            assert!(supports_vision(yes), "{yes}");
        }
        for no in [
            "openai/gpt-3.5-turbo",
            "openai/gpt-4",
            "anthropic/claude-2.1",
            "ollama/llama3",
            "gemini-pro",
            "",
            "openai/",
        ] {
            assert!(!supports_vision(no), "{no}");
        }
    }

    #[test]
    fn images_become_blocks_for_vision_models_and_text_otherwise() {
        let url = "http://127.0.0.1:8014/crewmesh-media/tenants/t/m.png?X-Amz-Signature=x";
        assert_eq!(
            attachment_part("openai/gpt-4o", AttachmentKind::Image, url, "m.png", ""),
            Part::ImageUrl(url.into())
        );
        let Part::Text(text) = attachment_part(
            "ollama/llama3",
            AttachmentKind::Image,
            url,
            "m.png",
            "my receipt",
        ) else {
            panic!("a text reference")
        };
        assert!(text.contains("m.png") && text.contains("my receipt") && text.contains(url));
        let Part::Text(text) =
            attachment_part("openai/gpt-4o", AttachmentKind::Document, url, "", "")
        else {
            panic!("documents are text references, even for vision models")
        };
        assert!(text.contains("unnamed") && text.contains(url));
    }
}
