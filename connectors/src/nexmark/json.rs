//! [`write_json_lines`]: a configuration's events as JSON lines, for the file source or for
//! producing to Kafka.

use std::io::{self, BufWriter, Write};

use super::config::NexmarkConfig;

/// Writes events `0..config.events()` to `w` in order, one JSON object per line (see
/// [`Event`](super::Event) for the format), and returns how many it wrote.
///
/// ```
/// use runnel_connectors::nexmark::{write_json_lines, NexmarkConfig};
///
/// let mut out = Vec::new();
/// assert_eq!(write_json_lines(&NexmarkConfig::new(100), &mut out).unwrap(), 100);
/// let text = String::from_utf8(out).unwrap();
/// assert_eq!(text.lines().count(), 100);
/// assert!(text.starts_with(r#"{"person":{"id":1000,"#));
/// ```
pub fn write_json_lines(config: &NexmarkConfig, w: impl Write) -> io::Result<u64> {
    let mut w = BufWriter::with_capacity(1 << 16, w);
    for event in config.iter() {
        serde_json::to_writer(&mut w, &event)?;
        w.write_all(b"\n")?;
    }
    w.flush()?;
    Ok(config.events())
}
