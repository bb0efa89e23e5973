//! How errors and text from remote parties are reported: an error with its causes on one line
//! ([`chain`]), a remote message made fit for one log line ([`one_line`]), a duration for a
//! reader ([`duration`]), and a line of `check`'s report ([`Finding`]). The bottom of the house: every module may use it, it uses none.

use std::time::Duration;

/// One line of `check`'s report: what was found to work, or a warning — something the operator
/// should change, although the check passes (it exits 0 either way).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Finding {
    Ok(String),
    Warning(String),
}

impl Finding {
    /// The line without its `ok:` or `warning:`.
    pub fn text(&self) -> &str {
        match self {
            Finding::Ok(text) | Finding::Warning(text) => text,
        }
    }

    pub fn is_warning(&self) -> bool {
        matches!(self, Finding::Warning(_))
    }
}

/// As `check` prints it: `ok: …` or `warning: …`.
impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Finding::Ok(text) => write!(f, "ok: {text}"),
            Finding::Warning(text) => write!(f, "warning: {text}"),
        }
    }
}

/// A duration for a reader: as `humantime` writes it below a day (`59m 58s`), in hours and
/// minutes from a day on (`768h`, `36h 30m`), never in months or days whose length a reader
/// must guess.
pub fn duration(d: Duration) -> String {
    let secs = d.as_secs();
    if secs < 24 * 3600 {
        return humantime::format_duration(d).to_string();
    }
    let (hours, minutes) = (secs / 3600, secs % 3600 / 60);
    if minutes == 0 {
        format!("{hours}h")
    } else {
        format!("{hours}h {minutes}m")
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_durations_read_in_hours() {
        assert_eq!(duration(Duration::from_secs(3598)), "59m 58s");
        assert_eq!(duration(Duration::from_secs(768 * 3600)), "768h");
        assert_eq!(duration(Duration::from_secs(36 * 3600 + 30 * 60 + 20)), "36h 30m");
        assert_eq!(duration(Duration::from_secs(24 * 3600)), "24h");
    }
}
