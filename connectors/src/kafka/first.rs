//! Finding the first record of a partition read from an explicit offset (a checkpoint's, the
//! group's committed one, a timestamp's).
//!
//! The record at the offset asked for is the one to start at, or else the next one there:
//! the offsets between may hold no record (transaction markers, compacted records), or the
//! records before it were deleted by retention. Two things make that harder than assigning the
//! offset:
//! - tansu 0.6 answers a fetch from inside a batch with the *next* batch, and with nothing
//!   when the batch is the partition's last, so a first record past the offset may be a skip
//!   (the reader seeks back and reads up to the offset again) and no record may mean either;
//! - a partition whose offsets went back (the topic deleted and made anew, a development
//!   broker's storage wiped) now ends before the offset.
//!
//! [`FirstRecord`] decides from what the reader sees: the records, in order, from where it was
//! assigned or last sought (librdkafka drops what it fetched before a seek); the partition's
//! end (librdkafka's end-of-partition report: every record below the high watermark of the
//! last fetch was read); and the queue staying empty. It does no I/O: the reader seeks and
//! looks the end up when told to. `connectors/src/kafka/first.rs`'s tests check it against a
//! model of both brokers.

/// What the reader does with a record, told by [`FirstRecord::record`].
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum OnRecord {
    /// Below the offset wanted: drop it.
    Drop,
    /// The first record: push it and the ones after it. `passed`: the offsets from the one
    /// wanted to it, when no record is left before them (deleted by retention, or markers: a
    /// reader cannot tell), else 0.
    Start { passed: u64 },
    /// The broker skipped records: seek back to this offset and read on.
    SeekBack(i64),
}

/// What the reader does at the partition's end or when nothing comes, told by
/// [`FirstRecord::end`] and [`FirstRecord::idle`].
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum OnEnd {
    /// The partition ends at the offset wanted (or the offsets before it hold no record): the
    /// first record is whatever comes next. `passed` offsets from the one wanted on were
    /// deleted by retention, with every record of the partition (0 if none).
    Here { passed: u64 },
    /// The partition ends before the offset wanted, at this offset: its offsets went back.
    WentBack(i64),
    /// Seek to this offset and read on (the broker skipped records, or the end is not known).
    Seek(i64),
    /// Nothing to do: what the reader is reading will tell (records read on in order from
    /// where it sought, up to the offset wanted or the partition's end).
    Wait,
}

/// Where a partition reader that started at `want` stands in finding its first record.
#[derive(Debug, Clone)]
pub(crate) struct FirstRecord {
    want: i64,
    /// Where the reader last sought to (`None`: it reads from where it was assigned).
    pass_from: Option<i64>,
    /// The highest offset read below `want` since the reader was assigned or last sought.
    below: Option<i64>,
    /// How far the next seek back goes (widened 4 times each time).
    rewind: i64,
}

impl FirstRecord {
    /// A reader assigned at `want`, that seeks back by `rewind` first.
    pub(crate) fn new(want: i64, rewind: i64) -> Self {
        FirstRecord {
            want,
            pass_from: None,
            below: None,
            rewind: rewind.max(1),
        }
    }

    /// The offset wanted.
    pub(crate) fn want(&self) -> i64 {
        self.want
    }

    /// The reader sought to `offset`: what comes next starts there.
    pub(crate) fn sought(&mut self, offset: i64) {
        self.pass_from = Some(offset);
        self.below = None;
    }

    /// A record at `offset` came.
    pub(crate) fn record(&mut self, offset: i64) -> OnRecord {
        let want = self.want;
        if offset < want {
            self.below = Some(self.below.map_or(offset, |b| b.max(offset)));
            return OnRecord::Drop;
        }
        if offset == want || want == 0 || self.below.is_some() {
            // Read on from below `want` (or at it): the offsets between hold no record.
            return OnRecord::Start { passed: 0 };
        }
        if self.pass_from == Some(0) {
            // Read from the partition's start, whose first record is past `want`: the records
            // before it were deleted (retention), and maybe some from `want` on.
            return OnRecord::Start {
                passed: u64::try_from(offset - want).unwrap_or(0),
            };
        }
        OnRecord::SeekBack(self.back())
    }

    /// Nothing came for a while (and no end was reported; not called while the brokers
    /// report errors). The record before `want` was read: the partition ends at `want`.
    /// Records below `want` were read, or the reader sought to the partition's start: the
    /// records read on, or the end comes (a seek would only start again). Else the broker
    /// answers a fetch from inside its last batch with nothing, or the partition ends before
    /// `want`: read again from further back (the end then tells).
    pub(crate) fn idle(&mut self) -> OnEnd {
        if self.want == 0 || self.below == Some(self.want - 1) {
            return OnEnd::Here { passed: 0 };
        }
        if self.below.is_some() || self.pass_from == Some(0) {
            return OnEnd::Wait;
        }
        OnEnd::Seek(self.back())
    }

    /// The partition's end was reached with nothing at or after `want` read since the reader
    /// was assigned or last sought; `bounds` are the partition's first offset and end as the
    /// broker gives them when asked (ListOffsets; `None`: it did not answer). tansu's end may
    /// be low (its last batch's first offset + 1), and its first offset any batch's; Kafka's
    /// are exact, and its end counts transaction markers.
    pub(crate) fn end(&mut self, bounds: Option<(i64, i64)>) -> OnEnd {
        let want = self.want;
        if want == 0 || self.below == Some(want - 1) {
            return OnEnd::Here { passed: 0 };
        }
        let Some((low, high)) = bounds else {
            // Read this stretch again, to come back here.
            return OnEnd::Seek(self.pass_from.unwrap_or(want));
        };
        if high >= want {
            // (tansu's end is at most the partition's.) A partition whose every offset from
            // `want` on was deleted holds no record at all (its first offset is its end; never
            // so on tansu, whose first offset is a batch's).
            let passed = if low > want && low == high {
                u64::try_from(low - want).unwrap_or(0)
            } else {
                0
            };
            return OnEnd::Here { passed };
        }
        // Where the records read end.
        let read_end = match (self.below, self.pass_from) {
            (Some(b), _) => b + 1,
            (None, _) if high == 0 => 0,
            // Read from `from`, below `want`, and nothing came: the partition ends at `from`
            // (or, on Kafka, `from` was out of range and the partition holds no record at
            // all: it ends before `want` either way).
            (None, Some(from)) if from < want => from,
            // Nothing read from `want` (where the reader was assigned, or sought again when
            // the end was not known): the partition ends at `want` (tansu's answer is then
            // low when its last batch has more than one record), or Kafka said `want` is out
            // of range and the partition holds no record at all. Read again from further
            // back to tell.
            (None, _) => return OnEnd::Seek(self.back()),
        };
        let end = high.max(read_end);
        if end >= want {
            OnEnd::Here { passed: 0 }
        } else {
            OnEnd::WentBack(end)
        }
    }

    /// The offset to seek back to, widening the next seek back.
    fn back(&mut self) -> i64 {
        let back = (self.want - self.rewind).max(0);
        self.rewind = self.rewind.saturating_mul(4);
        back
    }
}

#[cfg(test)]
mod tests {
    //! [`FirstRecord`] against a model of a partition on both brokers: a reader driven by it
    //! must push exactly the records at and after the offset it asked for, or report that the
    //! partition's offsets went back exactly when the partition now ends before that offset.

    use super::*;
    use proptest::prelude::*;

    /// A partition: its records' offsets, in batches, and where it ends.
    #[derive(Debug, Clone)]
    struct Partition {
        /// Batches of record offsets, in order.
        batches: Vec<Vec<i64>>,
        /// The offset after the last one (records or markers).
        hwm: i64,
        /// The first offset still there (Kafka: retention deleted what is below).
        low: i64,
        /// tansu (answers a fetch from inside a batch with the next batch, nothing past the
        /// end or inside the last batch; ListOffsets "latest" = last batch's first offset + 1,
        /// "earliest" = a batch's first offset, here the last one's) or Kafka (exact; a fetch
        /// out of range resets to the earliest offset).
        tansu: bool,
    }

    impl Partition {
        fn records(&self) -> impl Iterator<Item = i64> + '_ {
            self.batches
                .iter()
                .flatten()
                .copied()
                .filter(move |&o| o >= self.low)
        }

        /// What a fetch from `pos` on delivers: records, then whether the end is reported.
        fn fetch(&self, pos: i64) -> (Vec<i64>, bool) {
            if self.tansu {
                if pos == self.hwm {
                    return (vec![], true);
                }
                if pos > self.hwm {
                    return (vec![], false);
                }
                // The batch the fetch answers with: the one starting at `pos`, else the next.
                let Some(i) = self.batches.iter().position(|b| b[0] >= pos) else {
                    // Inside the last batch.
                    return (vec![], false);
                };
                let out = self.batches[i..].iter().flatten().copied().collect();
                return (out, true);
            }
            let pos = if pos > self.hwm || pos < self.low {
                self.low
            } else {
                pos
            };
            (self.records().filter(|&o| o >= pos).collect(), true)
        }

        /// ListOffsets "earliest" and "latest".
        fn bounds(&self) -> (i64, i64) {
            if self.tansu {
                self.batches.last().map_or((0, 0), |b| (b[0], b[0] + 1))
            } else {
                (self.low, self.hwm)
            }
        }
    }

    /// How a reader driven by [`FirstRecord`] ends.
    #[derive(Debug, PartialEq, Eq)]
    enum Outcome {
        /// The records it pushed, and the offsets it counted as deleted.
        Read(Vec<i64>, u64),
        /// It found the offsets went back, with this end.
        WentBack(i64),
    }

    /// When the reader's queue stays empty for a while (a slow broker): before the record at
    /// this index of each fetch's answer (past its end: after the answer, and before the end
    /// is reported), and whether the end's lookup fails, fetch by fetch.
    #[derive(Debug, Clone)]
    struct Stalls {
        at: Vec<Option<u8>>,
        lookup_fails: Vec<bool>,
    }

    /// Runs a reader assigned at `want`, as `KafkaPartitionReader` drives [`FirstRecord`]:
    /// records pushed once the first one is found, up to the partition's end. Panics if it
    /// seeks more often than widening its seeks back to offset 0 takes, plus once per failed
    /// lookup of the end (a slow broker must not make it start again and again).
    fn drive(p: &Partition, want: i64, rewind: i64, stalls: &Stalls) -> Outcome {
        let mut first = FirstRecord::new(want, rewind);
        let mut pos = want;
        let mut seeks = 0;
        let mut widen = 1;
        while rewind * (1 << (2 * (widen - 1))) < want {
            widen += 1;
        }
        let mut failed_lookups = 0;
        let mut pushed = Vec::new();
        let mut passed = 0;
        let mut started = false;
        for fetch in 0..200 {
            let (records, eof) = p.fetch(pos);
            let stall = stalls.at.get(fetch).copied().flatten().map(usize::from);
            let mut next = None;
            for i in 0..=records.len() {
                if !started && stall == Some(i) {
                    match first.idle() {
                        OnEnd::Wait => {}
                        OnEnd::Here { passed: p } => {
                            passed += p;
                            started = true;
                        }
                        OnEnd::Seek(to) => {
                            next = Some(to);
                            break;
                        }
                        OnEnd::WentBack(_) => unreachable!("idle never decides that"),
                    }
                }
                let Some(&o) = records.get(i) else { break };
                if started {
                    // The reader pushes nothing below `want` once the first record is found.
                    if o >= want {
                        pushed.push(o);
                    }
                    continue;
                }
                match first.record(o) {
                    OnRecord::Drop => {}
                    OnRecord::Start { passed: p } => {
                        passed += p;
                        started = true;
                        pushed.push(o);
                    }
                    OnRecord::SeekBack(to) => {
                        next = Some(to);
                        break;
                    }
                }
            }
            if next.is_none() && started {
                // Read on to the end: the answer holds everything up to it.
                return Outcome::Read(pushed, passed);
            }
            let next = match next {
                Some(to) => to,
                None if eof => {
                    let fails = stalls.lookup_fails.get(fetch).copied().unwrap_or(false);
                    failed_lookups += usize::from(fails);
                    match first.end((!fails).then(|| p.bounds())) {
                        OnEnd::Here { passed: p } => return Outcome::Read(vec![], passed + p),
                        OnEnd::WentBack(end) => return Outcome::WentBack(end),
                        OnEnd::Seek(to) => to,
                        OnEnd::Wait => unreachable!("the end always decides"),
                    }
                }
                // Nothing more comes: the reader checks after a while.
                None => match first.idle() {
                    OnEnd::Here { passed: p } => return Outcome::Read(vec![], passed + p),
                    OnEnd::Seek(to) => to,
                    other => {
                        panic!("{other:?} with nothing coming: the reader would wait for ever")
                    }
                },
            };
            first.sought(next);
            pos = next;
            seeks += 1;
            assert!(
                seeks <= widen + 2 * failed_lookups,
                "{seeks} seeks, {failed_lookups} failed lookups of the end: {p:?} want {want} rewind {rewind} {stalls:?}"
            );
        }
        panic!("no decision after 200 fetches");
    }

    /// The answer, computed from the partition: the records at and after `want`, with the
    /// offsets from `want` to the first one counted when no record is left before `want`
    /// (deleted by retention: a reader cannot tell those from markers), or to the end when
    /// retention deleted every offset from `want` on; or the end, if it is before `want`.
    fn reference(p: &Partition, want: i64) -> Outcome {
        let last_record_end = p.records().last().map_or(0, |o| o + 1);
        if p.hwm < want {
            return Outcome::WentBack(last_record_end);
        }
        let rest: Vec<i64> = p.records().filter(|&o| o >= want).collect();
        let none_before = p.records().all(|o| o >= want);
        let passed = match rest.first() {
            // From offset 0, the partition's first record is the one to start at.
            _ if want == 0 => 0,
            Some(&first) if none_before => first - want,
            None if p.low == p.hwm && p.low > want => p.low - want,
            _ => 0,
        };
        Outcome::Read(rest, u64::try_from(passed).unwrap())
    }

    fn partition() -> impl Strategy<Value = Partition> {
        (
            any::<bool>(),
            0..3i64,
            proptest::collection::vec((1..6i64, 0..3i64), 0..12),
            0..3i64,
            any::<u8>(),
        )
            .prop_map(|(tansu, lead, shape, trailing, low_pick)| {
                // tansu: no markers, no retention. Kafka: markers first (an aborted
                // transaction's), up to 2 after each batch (a transaction's commit), some
                // trailing, and a prefix deleted.
                let mut batches = Vec::new();
                let mut next = if tansu { 0 } else { lead };
                for (len, markers) in shape {
                    batches.push((next..next + len).collect::<Vec<_>>());
                    next += len + if tansu { 0 } else { markers };
                }
                let hwm = next + if tansu { 0 } else { trailing };
                let low = if tansu || hwm == 0 {
                    0
                } else {
                    i64::from(low_pick) % (hwm + 1) * 2 / 3
                };
                Partition {
                    batches,
                    hwm,
                    low,
                    tansu,
                }
            })
    }

    fn stalls() -> impl Strategy<Value = Stalls> {
        (
            proptest::collection::vec(proptest::option::weighted(0.3, 0..40u8), 0..30),
            proptest::collection::vec(proptest::bool::weighted(0.2), 0..30),
        )
            .prop_map(|(at, lookup_fails)| Stalls { at, lookup_fails })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(3000))]

        #[test]
        fn finds_the_first_record_or_that_the_offsets_went_back(
            p in partition(),
            want_pick in 0..80i64,
            rewind in 1..5i64,
            stalls in stalls(),
        ) {
            let want = want_pick % (p.hwm + 8);
            let got = drive(&p, want, rewind, &stalls);
            let want_outcome = reference(&p, want);
            match (&got, &want_outcome) {
                // The end found may be the broker's low answer or the records': below `want`
                // either way, and never below the last record read.
                (Outcome::WentBack(a), Outcome::WentBack(b)) => {
                    prop_assert!(*a < want && *a >= *b, "{p:?} want {want}: {got:?} {want_outcome:?}");
                }
                _ => prop_assert_eq!(&got, &want_outcome, "{:?} want {}", p, want),
            }
        }
    }

    /// A transaction's commit marker at the offset a checkpoint resumes at (the offset after
    /// the transaction's last record): Kafka answers with the next transaction's records, and
    /// none is lost.
    #[test]
    fn a_marker_at_the_offset_wanted_loses_nothing() {
        let p = Partition {
            batches: vec![vec![0, 1, 2], vec![4, 5, 6]],
            hwm: 8,
            low: 0,
            tansu: false,
        };
        let calm = Stalls {
            at: vec![],
            lookup_fails: vec![],
        };
        assert_eq!(drive(&p, 3, 10_000, &calm), Outcome::Read(vec![4, 5, 6], 0));
        assert_eq!(drive(&p, 7, 10_000, &calm), Outcome::Read(vec![], 0));
    }
}
