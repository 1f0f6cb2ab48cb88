//! What the Kafka clients report while they run: librdkafka's log lines and client errors,
//! logged as `tracing` events with key/value fields (`client`, `facility`, `error`) and kept so
//! that the connectors' errors can say what the brokers last said; and the producer's failed
//! deliveries, and the batches an idempotent producer was told of without an offset
//! (unconfirmed), counted, with the first of each kept for the sink.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::ConsumerContext;
use rdkafka::error::KafkaError;
use rdkafka::message::{DeliveryResult, Message};
use rdkafka::producer::ProducerContext;

/// The context of every client the connectors create: logs librdkafka's warnings and errors
/// and remembers the last one.
#[derive(Debug)]
pub(crate) struct ClientEvents {
    /// Who this client is, for the logs (`source 'bids' worker 1`).
    client: String,
    last_error: Mutex<Option<String>>,
}

impl ClientEvents {
    pub(crate) fn new(client: String) -> Self {
        ClientEvents {
            client,
            last_error: Mutex::new(None),
        }
    }

    /// The last warning or error librdkafka reported, if any.
    pub(crate) fn last_error(&self) -> Option<String> {
        self.last_error.lock().ok().and_then(|e| e.clone())
    }

    /// `"; the client last reported: ..."`, or nothing.
    pub(crate) fn last_error_suffix(&self) -> String {
        match self.last_error() {
            Some(e) => format!("; the client last reported: {e}"),
            None => String::new(),
        }
    }

    fn remember(&self, what: String) {
        if let Ok(mut e) = self.last_error.lock() {
            *e = Some(what);
        }
    }
}

impl ClientContext for ClientEvents {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        match level {
            RDKafkaLogLevel::Emerg
            | RDKafkaLogLevel::Alert
            | RDKafkaLogLevel::Critical
            | RDKafkaLogLevel::Error => {
                tracing::error!(client = %self.client, facility = fac, "librdkafka: {log_message}");
                self.remember(log_message.to_string());
            }
            RDKafkaLogLevel::Warning => {
                tracing::warn!(client = %self.client, facility = fac, "librdkafka: {log_message}");
                self.remember(log_message.to_string());
            }
            RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info => {
                tracing::info!(client = %self.client, facility = fac, "librdkafka: {log_message}");
            }
            RDKafkaLogLevel::Debug => {
                tracing::debug!(client = %self.client, facility = fac, "librdkafka: {log_message}");
            }
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        // The end of a partition is news (stop_at_end reads it from the partition's queue),
        // not an error.
        if error.rdkafka_error_code() == Some(rdkafka::types::RDKafkaErrorCode::PartitionEOF) {
            return;
        }
        tracing::warn!(client = %self.client, error = %error, "librdkafka: {reason}");
        self.remember(format!("{error}: {reason}"));
    }
}

impl ConsumerContext for ClientEvents {
    fn commit_callback(
        &self,
        result: rdkafka::error::KafkaResult<()>,
        _offsets: &rdkafka::TopicPartitionList,
    ) {
        // Commits are for monitoring and for `StartAt::Committed`; a failed one is retried
        // with the next, so it is only worth a warning.
        if let Err(e) = result {
            tracing::warn!(
                "{}: committing offsets to the consumer group failed: {e}",
                self.client
            );
        }
    }
}

/// The producer's context: client events, and delivery reports.
#[derive(Debug)]
pub(crate) struct ProducerEvents {
    pub(crate) client: ClientEvents,
    failed: AtomicU64,
    first_failure: Mutex<Option<String>>,
    /// What has been delivered.
    delivered: Mutex<Deliveries>,
    /// The producer is idempotent: a delivery at offset -1 begins a batch the broker answered
    /// with DUPLICATE_SEQUENCE_NUMBER (see [`ProducerEvents::unconfirmed`]).
    idempotent: bool,
    /// Such batches, and the first described.
    unconfirmed: AtomicU64,
    first_unconfirmed: Mutex<Option<String>>,
}

/// What a producer's delivery reports said so far.
#[derive(Debug, Default)]
pub(crate) struct Deliveries {
    /// Per partition, the offset after the last record delivered.
    pub(crate) next: std::collections::BTreeMap<i32, i64>,
    /// Per epoch (records sent with the epoch as their delivery opaque, see
    /// [`ProducerEvents::opaque`]): how many were delivered.
    pub(crate) acked: std::collections::BTreeMap<u64, u64>,
}

impl ProducerEvents {
    pub(crate) fn new(client: String) -> Self {
        ProducerEvents {
            client: ClientEvents::new(client),
            failed: AtomicU64::new(0),
            first_failure: Mutex::new(None),
            delivered: Mutex::new(Default::default()),
            idempotent: false,
            unconfirmed: AtomicU64::new(0),
            first_unconfirmed: Mutex::new(None),
        }
    }

    /// For an idempotent producer: batches delivered without an offset are counted apart
    /// ([`ProducerEvents::unconfirmed`]).
    pub(crate) fn idempotent(mut self, on: bool) -> Self {
        self.idempotent = on;
        self
    }

    /// Batches an idempotent producer was told were delivered without an offset, and the first
    /// described. librdkafka takes a broker's DUPLICATE_SEQUENCE_NUMBER answer to a batch as
    /// its delivery: the broker says it has the batch, not where (and a broker that advanced
    /// the producer's sequence and then failed to store the batch answers the same). The
    /// batch's records are reported at offsets counted up from the answer's -1, so only its
    /// first record can be told apart (it is not counted as delivered; the others are, at
    /// offsets that mean nothing).
    pub(crate) fn unconfirmed(&self) -> Option<(u64, String)> {
        let n = self.unconfirmed.load(Ordering::Relaxed);
        if n == 0 {
            return None;
        }
        let first = self
            .first_unconfirmed
            .lock()
            .ok()
            .and_then(|f| f.clone())
            .unwrap_or_default();
        Some((n, first))
    }

    /// Per partition, the offset after the last record delivered so far.
    pub(crate) fn delivered(&self) -> std::collections::BTreeMap<i32, i64> {
        self.delivered
            .lock()
            .map(|d| d.next.clone())
            .unwrap_or_default()
    }

    /// The delivery opaque of a record of `epoch`, counted per epoch in [`Deliveries`]
    /// (`0`: not counted).
    pub(crate) fn opaque(epoch: u64) -> usize {
        usize::try_from(epoch.saturating_add(1)).unwrap_or(0)
    }

    /// Runs `f` on what has been delivered.
    pub(crate) fn with_deliveries<R>(&self, f: impl FnOnce(&mut Deliveries) -> R) -> R {
        match self.delivered.lock() {
            Ok(mut d) => f(&mut d),
            Err(poisoned) => f(&mut poisoned.into_inner()),
        }
    }

    /// Records that librdkafka gave up on, and why the first one failed.
    pub(crate) fn failures(&self) -> Option<(u64, String)> {
        let n = self.failed.load(Ordering::Relaxed);
        if n == 0 {
            return None;
        }
        let first = self
            .first_failure
            .lock()
            .ok()
            .and_then(|f| f.clone())
            .unwrap_or_default();
        Some((n, first))
    }
}

impl ClientContext for ProducerEvents {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        self.client.log(level, fac, log_message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        self.client.error(error, reason);
    }
}

impl ProducerContext for ProducerEvents {
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, opaque: usize) {
        match result {
            Ok(m) => {
                if self.idempotent && m.offset() < 0 {
                    // The first record of a batch the broker answered with
                    // DUPLICATE_SEQUENCE_NUMBER (see `unconfirmed`).
                    let n = self.unconfirmed.fetch_add(1, Ordering::Relaxed);
                    if n == 0 {
                        let what = format!(
                            "a batch to topic '{}' (partition {}) was reported delivered \
                             without an offset: the broker answered it with \
                             DUPLICATE_SEQUENCE_NUMBER, which librdkafka takes as delivered \
                             (the broker says it has the batch, not where; a broker that \
                             advanced the producer's sequence and then failed to store the \
                             batch answers the same)",
                            m.topic(),
                            m.partition()
                        );
                        tracing::warn!(client = %self.client.client, "{what}");
                        if let Ok(mut f) = self.first_unconfirmed.lock() {
                            *f = Some(what);
                        }
                    }
                    return;
                }
                if let Ok(mut d) = self.delivered.lock() {
                    let next = d.next.entry(m.partition()).or_insert(0);
                    *next = (*next).max(m.offset() + 1);
                    if opaque > 0 {
                        let epoch = opaque as u64 - 1;
                        *d.acked.entry(epoch).or_insert(0) += 1;
                    }
                }
            }
            Err((e, msg)) => {
                let n = self.failed.fetch_add(1, Ordering::Relaxed);
                if n == 0 {
                    let what = format!(
                        "a record to topic '{}' (partition {}) was not delivered: {e}",
                        msg.topic(),
                        msg.partition()
                    );
                    tracing::error!(client = %self.client.client, error = %e, "{what}");
                    if let Ok(mut f) = self.first_failure.lock() {
                        *f = Some(what);
                    }
                }
            }
        }
    }
}
