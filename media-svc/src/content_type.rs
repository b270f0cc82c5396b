//! Which media types are stored, and the extension each object key gets.
//!
//! An allowlist, not a denylist: anything a browser could render as active
//! content (HTML, SVG, JavaScript) must never be served from our storage
//! under a URL we signed.

/// Allowed types with the extension their object keys carry.
const ALLOWED: &[(&str, &str)] = &[
    ("image/jpeg", "jpg"),
    ("image/png", "png"),
    ("image/webp", "webp"),
    ("image/gif", "gif"),
    ("application/pdf", "pdf"),
    ("text/plain", "txt"),
    ("text/csv", "csv"),
    ("audio/ogg", "ogg"),
    ("audio/mpeg", "mp3"),
    ("audio/mp4", "m4a"),
    ("audio/aac", "aac"),
    ("audio/amr", "amr"),
    ("video/mp4", "mp4"),
    ("video/3gpp", "3gp"),
    ("application/msword", "doc"),
    (
        "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
        "docx",
    ),
    ("application/vnd.ms-excel", "xls"),
    (
        "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
        "xlsx",
    ),
    ("application/vnd.ms-powerpoint", "ppt"),
    (
        "application/vnd.openxmlformats-officedocument.presentationml.presentation",
        "pptx",
    ),
];

/// An allowed media type, bare (no parameters) and lower case.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MediaType {
    pub essence: &'static str,
    pub extension: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ContentTypeError {
    #[error("is required")]
    Missing,
    #[error(
        "`{0}` is not an accepted media type (images, PDF, text, CSV, audio, video, office documents)"
    )]
    NotAllowed(String),
}

/// `audio/ogg; codecs=opus` → audio/ogg, if allowed.
pub fn parse(raw: &str) -> Result<MediaType, ContentTypeError> {
    let essence = raw.split(';').next().unwrap_or_default().trim();
    if essence.is_empty() {
        return Err(ContentTypeError::Missing);
    }
    ALLOWED
        .iter()
        .find(|(allowed, _)| allowed.eq_ignore_ascii_case(essence))
        .map(|(essence, extension)| MediaType { essence, extension })
        .ok_or_else(|| {
            // Bounded, so a hostile header cannot bloat error messages and logs.
            let shown: String = essence.chars().take(100).collect();
            ContentTypeError::NotAllowed(shown)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameters_and_case_are_stripped() {
        assert_eq!(
            parse("audio/ogg; codecs=opus").unwrap().essence,
            "audio/ogg"
        );
        assert_eq!(parse(" Image/JPEG ").unwrap().extension, "jpg");
        assert_eq!(
            parse("text/plain;charset=utf-8").unwrap().essence,
            "text/plain"
        );
    }

    #[test]
    fn active_content_and_junk_are_refused() {
        for bad in [
            "text/html",
            "image/svg+xml",
            "application/javascript",
            "*/*",
        ] {
            assert!(
                matches!(parse(bad), Err(ContentTypeError::NotAllowed(_))),
                "{bad}"
            );
        }
        assert_eq!(parse(""), Err(ContentTypeError::Missing));
        assert_eq!(parse("; x=y"), Err(ContentTypeError::Missing));
    }
}
