//! `Content-Disposition: attachment` for a download name a browser sent: a quoted
//! ASCII fallback and the exact name as RFC 5987 `filename*`, so no name can break out
//! of the header or reach the store's response as anything but a file name.

/// Longest download name accepted, in bytes (the common file-system limit).
const MAX_NAME_BYTES: usize = 255;

/// Why a download name was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Error {
    /// Empty.
    #[error("must not be empty")]
    Empty,
    /// Over 255 bytes.
    #[error("must be at most 255 bytes")]
    TooLong,
    /// A control or format character (which could disguise the name).
    #[error("must not contain control characters, line separators or format characters")]
    Control,
    /// A path separator.
    #[error("must be a file name, without '/' or '\\'")]
    Separator,
}

/// The disposition value for downloading as `name`.
pub(crate) fn attachment(name: &str) -> Result<String, Error> {
    if name.is_empty() {
        return Err(Error::Empty);
    }
    if name.len() > MAX_NAME_BYTES {
        return Err(Error::TooLong);
    }
    if crate::core::text::breaks_or_hides(name) {
        return Err(Error::Control);
    }
    if name.contains(['/', '\\']) {
        return Err(Error::Separator);
    }
    let fallback: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() && c != '"' && c != '%' || c == ' ' {
                c
            } else {
                '_'
            }
        })
        .collect();
    Ok(format!(
        "attachment; filename=\"{fallback}\"; filename*=UTF-8''{}",
        super::percent_encode_component(name)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_names_are_quoted_and_encoded() {
        assert_eq!(
            attachment("report 1.pdf").unwrap(),
            "attachment; filename=\"report 1.pdf\"; filename*=UTF-8''report%201.pdf"
        );
    }

    #[test]
    fn quotes_and_unicode_cannot_break_the_header() {
        let value = attachment("a\"b;é.txt").unwrap();
        assert!(
            value.starts_with("attachment; filename=\"a_b;_.txt\";"),
            "{value}"
        );
        assert!(
            value.ends_with("filename*=UTF-8''a%22b%3B%C3%A9.txt"),
            "{value}"
        );
    }

    #[test]
    fn bad_names_are_refused() {
        assert_eq!(attachment(""), Err(Error::Empty));
        assert_eq!(attachment("a/b"), Err(Error::Separator));
        assert_eq!(attachment("a\r\nb"), Err(Error::Control));
        assert_eq!(attachment("gnp.\u{202E}exe"), Err(Error::Control));
        assert_eq!(attachment("a\u{2028}b.txt"), Err(Error::Control));
        assert_eq!(attachment("a\u{2029}b.txt"), Err(Error::Control));
        assert_eq!(attachment(&"x".repeat(256)), Err(Error::TooLong));
    }
}
