//! How errors and text from remote parties are reported: an error with its causes on one line
//! ([`chain`]), and a remote message made fit for one log line ([`one_line`]). The bottom of
//! the house: every module may use it, it uses none.

/// The error and its causes, joined with `: ` (what `{:#}` prints for anyhow).
pub fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Text from a remote party (Vault's `errors`, the Docker Engine's `message`) made fit for one
/// log line: newlines folded, at most `max` bytes.
pub fn one_line(text: &str, max: usize) -> String {
    let mut text = text.replace(['\n', '\r'], " ");
    if text.len() > max {
        let mut cut = max;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
        text.push('…');
    }
    text
}
