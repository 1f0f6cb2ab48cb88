//! [`StdoutSink`]: prints each record on its own line, as JSON or in `Debug` form, one locked
//! write per batch so that lines from different workers never interleave.

use std::io::Write;

use runnel_engine::{Data, Epoch, Error, Event, Result, Sink, SinkContext};

/// How [`StdoutSink`] prints a record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Format {
    Json,
    Debug,
}

/// A sink that prints each record's data to standard output, one per line: JSON by default,
/// `Debug` form with [`StdoutSink::debug`]. Each worker prints its own records; a batch is
/// rendered into a buffer and written under one lock of stdout.
///
/// A write that fails (a closed pipe) fails the job with [`Error::Sink`] naming the sink.
#[derive(Debug)]
pub struct StdoutSink {
    format: Format,
    name: String,
    buf: Vec<u8>,
}

impl Default for StdoutSink {
    fn default() -> Self {
        StdoutSink {
            format: Format::Json,
            name: "stdout".to_string(),
            buf: Vec::new(),
        }
    }
}

impl StdoutSink {
    /// Prints records as JSON lines.
    pub fn new() -> Self {
        Self::default()
    }

    /// Prints records in their `Debug` form instead of JSON.
    pub fn debug(mut self) -> Self {
        self.format = Format::Debug;
        self
    }

    /// Appends the lines of `records` to `self.buf` (taking the records out).
    fn render<T: Data>(&mut self, records: &mut Vec<Event<T>>) -> Result<()> {
        for e in records.drain(..) {
            match self.format {
                Format::Json => {
                    serde_json::to_writer(&mut self.buf, &e.data).map_err(|err| Error::Sink {
                        sink: self.name.clone(),
                        reason: format!("cannot encode a record as JSON: {err}"),
                    })?;
                    self.buf.push(b'\n');
                }
                Format::Debug => {
                    // Writing into a Vec cannot fail.
                    let _ = writeln!(self.buf, "{:?}", e.data);
                }
            }
        }
        Ok(())
    }

    fn flush_buf(&mut self) -> Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let mut out = std::io::stdout().lock();
        let written = out.write_all(&self.buf).and_then(|_| out.flush());
        self.buf.clear();
        written.map_err(|e| Error::Sink {
            sink: self.name.clone(),
            reason: format!("cannot write to stdout: {e}"),
        })
    }
}

impl<T: Data> Sink<T> for StdoutSink {
    fn open(&mut self, ctx: &SinkContext) -> Result<()> {
        self.name.clone_from(&ctx.name);
        Ok(())
    }

    fn write(&mut self, _epoch: Epoch, records: &mut Vec<Event<T>>) -> Result<()> {
        let rendered = self.render(records);
        records.clear();
        rendered?;
        self.flush_buf()
    }

    fn close(&mut self) -> Result<()> {
        self.flush_buf()
    }

    fn abort(&mut self) {
        self.buf.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn events<T>(items: Vec<T>) -> Vec<Event<T>> {
        items
            .into_iter()
            .enumerate()
            .map(|(i, x)| Event::new(i as i64, x))
            .collect()
    }

    #[test]
    fn renders_json_lines() {
        let mut sink = StdoutSink::new();
        let mut batch = events(vec![(1u64, "a".to_string()), (2, "b\n".to_string())]);
        sink.render(&mut batch).unwrap();
        assert!(batch.is_empty());
        assert_eq!(
            String::from_utf8(sink.buf.clone()).unwrap(),
            "[1,\"a\"]\n[2,\"b\\n\"]\n"
        );
    }

    #[test]
    fn renders_debug_lines() {
        let mut sink = StdoutSink::new().debug();
        let mut batch = events(vec![Some(3u8), None]);
        sink.render(&mut batch).unwrap();
        assert_eq!(
            String::from_utf8(sink.buf.clone()).unwrap(),
            "Some(3)\nNone\n"
        );
    }

    #[test]
    fn runs_in_a_job() {
        use runnel_engine::testing::{TestItem, TestSource};
        use runnel_engine::{run, Job, RunOptions, SourceOptions};
        let job = Job::new("stdout", "prints two records", |flow| {
            let parts = vec![vec![TestItem::At(0, 1u64)], vec![TestItem::At(0, 2u64)]];
            flow.source("numbers", TestSource::new(parts), SourceOptions::new())?
                .sink("print", StdoutSink::new())
        });
        let summary = run(&job, RunOptions::workers(2)).unwrap();
        assert_eq!(summary.events_out, 2);
    }
}
