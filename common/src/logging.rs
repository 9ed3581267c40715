//! One logging set-up for the `master` and `worker` binaries (`--log-format text|json`, or
//! `EXPLORE_LOG_FORMAT`): log lines go to stderr, filtered by `RUST_LOG` (default `info`).
//!
//! - `text`: human-readable lines; colours (ANSI escape codes) only when the stream is a
//!   terminal and `NO_COLOR` is unset or empty, so a log written to a file or a pipe is plain.
//! - `json`: one JSON object per line, the event's fields at the top level beside `timestamp`,
//!   `level`, `target` and `message` (e.g. `{"timestamp":"…","level":"INFO","message":"trial
//!   completed","trial_id":"…","attempt":1,"worker_id":"…","target":"explore_worker::join"}`).
//!   Never coloured.

use std::fmt;
use std::io::IsTerminal;
use std::str::FromStr;

use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::EnvFilter;

/// The environment variable that sets the log format when `--log-format` is not given.
pub const LOG_FORMAT_ENV: &str = "EXPLORE_LOG_FORMAT";

/// The names `--log-format` accepts.
pub const LOG_FORMAT_NAMES: [&str; 2] = ["text", "json"];

/// How log events are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines, coloured only on a terminal.
    #[default]
    Text,
    /// One JSON object per line, fields at the top level.
    Json,
}

impl FromStr for LogFormat {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            other => Err(format!(
                "unknown log format {other:?}, expected text or json"
            )),
        }
    }
}

impl fmt::Display for LogFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        })
    }
}

/// Whether to colour output: only on a terminal, and never when `no_color` (the value of
/// `NO_COLOR`) is set to a non-empty string (<https://no-color.org>).
pub fn use_ansi(is_terminal: bool, no_color: Option<&str>) -> bool {
    is_terminal && no_color.is_none_or(str::is_empty)
}

/// Whether stderr should be coloured now: a terminal, and `NO_COLOR` unset or empty.
pub fn stderr_ansi() -> bool {
    let no_color = std::env::var("NO_COLOR").ok();
    use_ansi(std::io::stderr().is_terminal(), no_color.as_deref())
}

/// Installs the process's log subscriber writing to stderr; see the module documentation.
/// Does nothing when one is installed already.
pub fn init(format: LogFormat) {
    init_with_writer(format, std::io::stderr);
}

/// [`init`] with another destination for the lines, e.g. a writer that clears progress bars
/// first. Colours follow stderr ([`stderr_ansi`]): the writer must end on stderr.
pub fn init_with_writer<W>(format: LogFormat, writer: W)
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer);
    // An error means a subscriber is installed already (a test, a second call): keep it.
    let _ = match format {
        LogFormat::Text => builder.with_ansi(stderr_ansi()).try_init(),
        LogFormat::Json => builder
            .with_ansi(false)
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .try_init(),
    };
}

/// Reports the error that ends the process: `error: …` on stderr with text logs; with JSON
/// logs an ERROR event (`"error"` field), so every line a JSON run writes to stderr parses.
pub fn report_error(format: LogFormat, error: &str) {
    match format {
        LogFormat::Text => eprintln!("error: {error}"),
        LogFormat::Json => tracing::error!(error, "error: {error}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_parse_and_print_by_name() {
        for name in LOG_FORMAT_NAMES {
            assert_eq!(name.parse::<LogFormat>().unwrap().to_string(), name);
        }
        assert_eq!("JSON".parse::<LogFormat>(), Ok(LogFormat::Json));
        let err = "xml".parse::<LogFormat>().unwrap_err();
        assert!(err.contains("text or json"), "{err}");
        assert_eq!(LogFormat::default(), LogFormat::Text);
    }

    #[test]
    fn colour_only_on_a_terminal_without_no_color() {
        assert!(use_ansi(true, None));
        assert!(use_ansi(true, Some("")));
        assert!(!use_ansi(true, Some("1")));
        assert!(!use_ansi(false, None));
        assert!(!use_ansi(false, Some("")));
    }
}
