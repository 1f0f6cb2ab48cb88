//! Updating results: [`Table`]s, collections that change as input arrives, maintained
//! incrementally on differential dataflow's arrangements.
//!
//! A [`Stream`] is append-only: a record, once emitted, stays. Some answers are not like that:
//! an unwindowed join, the average winning bid per category, the latest ten prices of a seller.
//! Each new input can change an earlier answer. A [`Table`] holds such an answer: it is a
//! multiset of rows that changes at every epoch, and operators on it (`join`, `reduce`,
//! `count`) keep their output up to date by exchanging *changes*, as Flink's dynamic tables
//! and Kafka Streams' KTables do.
//!
//! * [`Stream::to_table`] makes every record of a stream a row inserted for good, and
//!   [`Stream::apply_changes`] makes a stream of [`Change`]s the table they describe.
//! * [`Table::key_by`] gives a [`KeyedTable`]; [`KeyedTable::join`] matches rows with equal keys
//!   of two tables (differential's `join`, on arrangements of both sides), and
//!   [`KeyedTable::reduce`] maps every key's rows to output rows (differential's `reduce`), with
//!   [`KeyedTable::count`] and [`KeyedTable::reduce_to`] as the common cases.
//! * [`Table::changelog`] is the stream of changes: [`Change::Insert`] and [`Change::Retract`],
//!   in epoch order, with the retractions of an epoch before its insertions, so a consumer that
//!   applies them in order always holds the current answer. Sinks write it with its operation
//!   field (`{"op":"insert","row":...}`); [`Table::sink`] is the shorthand.
//!
//! **Time.** A change happens at an epoch: the table's rows after epoch `e` are the answer over
//! every input record of epochs `<= e`, and the changelog carries, per epoch, the difference
//! from the answer after the epoch before. Changes of an epoch are emitted once every input of
//! that epoch has been seen (when the epoch's frontier passes), so within a run the answer is
//! exact at every epoch boundary. A change's event time is the largest event time that had
//! entered the table's inputs on that worker when it was emitted, the creation time of the
//! newest input it can include (what latency is measured from).
//!
//! **Checkpoints.** Table state lives in differential's arrangements, which runnel does not
//! checkpoint yet. A flow with a table refuses to run with checkpoints on (the error names the
//! operator); jobs built on tables say so with [`crate::Job::without_checkpoints`] so the CLI
//! runs them with checkpoints off.

use std::cell::Cell;
use std::collections::BTreeSet;
use std::panic::Location;
use std::rc::Rc;

use differential_dataflow::{AsCollection, VecCollection};
use serde::{Deserialize, Serialize};
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::Capability;

use crate::error::Result;
use crate::event::{Data, Event, ExchangeKey};
use crate::flow::{Shared, Stream, TStream};
use crate::sink::Sink;
use crate::watermark::WmReport;

/// What a table row must be: [`Data`] with a total order (differential sorts and
/// consolidates rows).
pub trait Row: Data + Ord {}
impl<T: Data + Ord> Row for T {}

/// One change to a table: a row inserted or a row retracted.
///
/// In a human-readable format (JSON) it is `{"op":"insert","row":...}` or
/// `{"op":"retract","row":...}`. In a binary one (bincode, between processes and in
/// checkpoints) it is the variant's index and the row: bincode cannot read the field names of
/// the JSON shape back (an adjacently tagged enum asks for `deserialize_identifier`).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Change<T> {
    /// The row is now in the table (once more).
    Insert(T),
    /// The row is no longer in the table (once less).
    Retract(T),
}

/// [`Change`] as written in a human-readable format.
#[derive(Serialize, Deserialize)]
#[serde(tag = "op", content = "row", rename_all = "snake_case")]
enum Tagged<T> {
    Insert(T),
    Retract(T),
}

/// [`Change`] as written in a binary format.
#[derive(Serialize, Deserialize)]
enum Plain<T> {
    Insert(T),
    Retract(T),
}

impl<T: Serialize> Serialize for Change<T> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        match (s.is_human_readable(), self) {
            (true, Change::Insert(t)) => Tagged::Insert(t).serialize(s),
            (true, Change::Retract(t)) => Tagged::Retract(t).serialize(s),
            (false, Change::Insert(t)) => Plain::Insert(t).serialize(s),
            (false, Change::Retract(t)) => Plain::Retract(t).serialize(s),
        }
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Change<T> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        Ok(if d.is_human_readable() {
            match Tagged::deserialize(d)? {
                Tagged::Insert(t) => Change::Insert(t),
                Tagged::Retract(t) => Change::Retract(t),
            }
        } else {
            match Plain::deserialize(d)? {
                Plain::Insert(t) => Change::Insert(t),
                Plain::Retract(t) => Change::Retract(t),
            }
        })
    }
}

impl<T> Change<T> {
    /// The row inserted or retracted.
    pub fn row(&self) -> &T {
        match self {
            Change::Insert(t) | Change::Retract(t) => t,
        }
    }

    /// `+1` for an insertion, `-1` for a retraction.
    pub fn diff(&self) -> i64 {
        match self {
            Change::Insert(_) => 1,
            Change::Retract(_) => -1,
        }
    }

    /// Whether this is an insertion.
    pub fn is_insert(&self) -> bool {
        matches!(self, Change::Insert(_))
    }
}

type Coll<'s, T> = VecCollection<'s, u64, T, isize>;

/// Per worker: the largest event time that entered a table's inputs so far.
type Seen = Rc<Vec<Rc<Cell<i64>>>>;

fn seen_max(seen: &Seen) -> i64 {
    seen.iter().map(|c| c.get()).max().unwrap_or(i64::MIN)
}

/// A collection of rows of type `T` that changes as input arrives (see the module docs).
pub struct Table<'s, T: 'static> {
    coll: Coll<'s, T>,
    wm: TStream<'s, WmReport>,
    sources: Rc<BTreeSet<u32>>,
    node: usize,
    shared: Rc<Shared>,
    seen: Seen,
}

impl<T: Clone + 'static> Clone for Table<'_, T> {
    fn clone(&self) -> Self {
        Table {
            coll: self.coll.clone(),
            wm: self.wm.clone(),
            sources: self.sources.clone(),
            node: self.node,
            shared: self.shared.clone(),
            seen: self.seen.clone(),
        }
    }
}

/// A table of `(key, value)` rows, for [`KeyedTable::join`] and [`KeyedTable::reduce`], which
/// exchange rows by key.
pub struct KeyedTable<'s, K: 'static, V: 'static> {
    inner: Table<'s, (K, V)>,
}

impl<K: Clone + 'static, V: Clone + 'static> Clone for KeyedTable<'_, K, V> {
    fn clone(&self) -> Self {
        KeyedTable {
            inner: self.inner.clone(),
        }
    }
}

impl<'s, T: Row> Stream<'s, T> {
    /// The table whose rows are every record of this stream so far: each record is inserted
    /// at its epoch and never retracted.
    #[track_caller]
    pub fn to_table(&self) -> Table<'s, T> {
        self.rows_to_table("to_table", Location::caller(), |t| (t, 1))
    }
}

impl<'s, T: Data> Stream<'s, T> {
    /// The table of `row(record)` for every record of this stream: the row, with its diff,
    /// at the record's epoch (an operator named `op`).
    fn rows_to_table<U: Row>(
        &self,
        op: &'static str,
        at: &'static Location<'static>,
        row: impl Fn(T) -> (U, isize) + 'static,
    ) -> Table<'s, U> {
        let cell = Rc::new(Cell::new(i64::MIN));
        let seen = cell.clone();
        let inner = self.data.clone().unary(Pipeline, op, move |_, _| {
            move |input, output| {
                input.for_each(|cap, batch| {
                    let Some(&t) = cap.least() else { return };
                    let mut max = seen.get();
                    let mut rows: Vec<(U, u64, isize)> = batch
                        .drain(..)
                        .map(|e| {
                            max = max.max(e.ts);
                            let (r, d) = row(e.data);
                            (r, t, d)
                        })
                        .collect();
                    seen.set(max);
                    output.session(&cap).give_container(&mut rows);
                });
            }
        });
        let name = self.shared.auto_name(op);
        self.shared.consume(self.node);
        self.shared.note_table(&name);
        let node = self
            .shared
            .add_node(name, at, true)
            .expect("auto names are unique");
        Table {
            coll: inner.as_collection(),
            wm: self.wm.clone(),
            sources: self.sources.clone(),
            node,
            shared: self.shared.clone(),
            seen: Rc::new(vec![cell]),
        }
    }
}

impl<'s, T: Row> Stream<'s, Change<T>> {
    /// The table that this changelog describes (Flink's `fromChangelogStream`): each
    /// [`Change::Insert`] adds its row at its epoch, each [`Change::Retract`] takes one copy
    /// away. A stateful operator that keeps its own bounded state (q9's auctions closed at
    /// expiry) can so feed tables downstream. A retraction of a row that is not there leaves
    /// the row with a negative count, which the operators downstream see as it is: the stream
    /// must retract only what it inserted before, as [`Table::changelog`] does.
    ///
    /// ```
    /// use runnel_engine::testing::{Collector, TestItem, TestSource};
    /// use runnel_engine::{run, Change, Job, RunOptions, SourceOptions};
    ///
    /// let out = Collector::new();
    /// let sink = out.clone();
    /// let job = Job::new("changes", "a changelog made a table", move |flow| {
    ///     let row = |k: &str, v: u64| (k.to_string(), v);
    ///     let input = vec![vec![
    ///         TestItem::At(1, Change::Insert(row("a", 1))),
    ///         TestItem::At(2, Change::Insert(row("b", 2))),
    ///         TestItem::Cut,
    ///         TestItem::At(3, Change::Retract(row("a", 1))),
    ///     ]];
    ///     flow.source("changes", TestSource::new(input), SourceOptions::new())?
    ///         .apply_changes()
    ///         .key_by(|_| ())
    ///         .reduce_to("sum", |_, rows| {
    ///             Some(rows.iter().map(|((_, v), n)| *v * *n as u64).sum::<u64>())
    ///         })?
    ///         .into_table()
    ///         .sink("out", sink.sink())
    /// });
    /// run(&job, RunOptions::workers(2)).unwrap();
    /// // The sum is 3 after the first epoch, then 2 once ("a", 1) is retracted.
    /// let sums: Vec<u64> = out.data().iter().filter(|c| c.is_insert()).map(|c| c.row().1).collect();
    /// assert_eq!(sums, vec![3, 2]);
    /// ```
    #[track_caller]
    pub fn apply_changes(&self) -> Table<'s, T> {
        self.rows_to_table("apply_changes", Location::caller(), |c| match c {
            Change::Insert(row) => (row, 1),
            Change::Retract(row) => (row, -1),
        })
    }
}

impl<'s, T: Row> Table<'s, T> {
    fn derive<U: 'static>(
        &self,
        name: String,
        at: &'static Location<'static>,
        coll: Coll<'s, U>,
    ) -> Result<Table<'s, U>> {
        self.shared.consume(self.node);
        let node = self.shared.add_node(name, at, true)?;
        Ok(Table {
            coll,
            wm: self.wm.clone(),
            sources: self.sources.clone(),
            node,
            shared: self.shared.clone(),
            seen: self.seen.clone(),
        })
    }

    /// The table of `f(row)` for every row.
    #[track_caller]
    pub fn map<U: Row>(&self, f: impl Fn(T) -> U + 'static) -> Table<'s, U> {
        let at = Location::caller();
        let coll = self.coll.clone().map(f);
        self.derive(self.shared.auto_name("table_map"), at, coll)
            .expect("auto names are unique")
    }

    /// The rows for which `f` is true.
    #[track_caller]
    pub fn filter(&self, f: impl Fn(&T) -> bool + 'static) -> Table<'s, T> {
        let at = Location::caller();
        let coll = self.coll.clone().filter(f);
        self.derive(self.shared.auto_name("table_filter"), at, coll)
            .expect("auto names are unique")
    }

    /// Every row that `f(row)` yields, for every row.
    #[track_caller]
    pub fn flat_map<U: Row, I: IntoIterator<Item = U>>(
        &self,
        f: impl Fn(T) -> I + 'static,
    ) -> Table<'s, U> {
        let at = Location::caller();
        let coll = self.coll.clone().flat_map(f);
        self.derive(self.shared.auto_name("table_flat_map"), at, coll)
            .expect("auto names are unique")
    }

    /// The rows of both tables.
    #[track_caller]
    pub fn union(&self, other: &Table<'s, T>) -> Table<'s, T> {
        let at = Location::caller();
        self.shared.consume(other.node);
        let coll = self.coll.clone().concat(other.coll.clone());
        let mut out = self
            .derive(self.shared.auto_name("table_union"), at, coll)
            .expect("auto names are unique");
        out.wm = timely::dataflow::operators::Concat::concat(self.wm.clone(), other.wm.clone());
        out.sources = Rc::new(self.sources.union(&other.sources).copied().collect());
        out.seen = Rc::new(self.seen.iter().chain(other.seen.iter()).cloned().collect());
        out
    }

    /// Keys every row by `key(row)`.
    #[track_caller]
    pub fn key_by<K: ExchangeKey>(&self, key: impl Fn(&T) -> K + 'static) -> KeyedTable<'s, K, T> {
        let at = Location::caller();
        let coll = self.coll.clone().map(move |t| (key(&t), t));
        KeyedTable {
            inner: self
                .derive(self.shared.auto_name("table_key_by"), at, coll)
                .expect("auto names are unique"),
        }
    }

    /// The stream of this table's changes (see the module docs): per epoch, its retractions,
    /// then its insertions.
    #[track_caller]
    pub fn changelog(&self) -> Stream<'s, Change<T>> {
        let at = Location::caller();
        let seen = self.seen.clone();
        let data: TStream<'s, Event<Change<T>>> =
            self.coll
                .inner
                .clone()
                .unary(Pipeline, "changelog", move |_, _| {
                    let mut pending: Vec<(T, u64, isize)> = Vec::new();
                    move |input, output| {
                        input.for_each(|cap, batch| {
                            pending.append(batch);
                            pending.sort_by_key(|u| (u.1, u.2 > 0));
                            let ts = seen_max(&seen);
                            let mut i = 0;
                            while i < pending.len() {
                                let t = pending[i].1;
                                let cap: Capability<u64> = cap.delayed(&t, 0);
                                let mut session = output.session(&cap);
                                while i < pending.len() && pending[i].1 == t {
                                    let (row, _, r) = &pending[i];
                                    let n = r.unsigned_abs();
                                    for _ in 0..n {
                                        let change = if *r > 0 {
                                            Change::Insert(row.clone())
                                        } else {
                                            Change::Retract(row.clone())
                                        };
                                        session.give(Event { ts, data: change });
                                    }
                                    i += 1;
                                }
                            }
                            pending.clear();
                        });
                    }
                });
        self.shared.consume(self.node);
        let node = self
            .shared
            .add_node(self.shared.auto_name("changelog"), at, true)
            .expect("auto names are unique");
        Stream {
            data,
            wm: self.wm.clone(),
            sources: self.sources.clone(),
            node,
            shared: self.shared.clone(),
        }
    }

    /// Writes the table's changelog to `sink`, an operator named `name`.
    #[track_caller]
    pub fn sink(&self, name: &str, sink: impl Sink<Change<T>>) -> Result<()> {
        self.changelog().sink(name, sink)
    }
}

impl<'s, K: ExchangeKey, V: Row> KeyedTable<'s, K, V> {
    /// The `(key, value)` table underneath.
    pub fn into_table(self) -> Table<'s, (K, V)> {
        self.inner
    }

    /// The table of `(key, value, other value)` for every pair of rows, one from each
    /// table, with equal keys. Both sides are kept (arranged) by key, so a row arriving on
    /// either side meets every row of the other side, earlier or later.
    #[track_caller]
    pub fn join<W: Row>(&self, other: &KeyedTable<'s, K, W>) -> Table<'s, (K, V, W)> {
        let at = Location::caller();
        self.inner.shared.consume(other.inner.node);
        let coll = self
            .inner
            .coll
            .clone()
            .join_map(other.inner.coll.clone(), |k: &K, v: &V, w: &W| {
                (k.clone(), v.clone(), w.clone())
            });
        let mut out = self
            .inner
            .derive(self.inner.shared.auto_name("join"), at, coll)
            .expect("auto names are unique");
        out.wm = timely::dataflow::operators::Concat::concat(
            self.inner.wm.clone(),
            other.inner.wm.clone(),
        );
        out.sources = Rc::new(
            self.inner
                .sources
                .union(&other.inner.sources)
                .copied()
                .collect(),
        );
        out.seen = Rc::new(
            self.inner
                .seen
                .iter()
                .chain(other.inner.seen.iter())
                .cloned()
                .collect(),
        );
        out
    }

    /// Maps every key's rows to output rows: `logic(key, rows, out)` sees the key's current
    /// rows (each value once, sorted, with its multiplicity) and pushes output values with
    /// their multiplicities; the output table holds `(key, value)` for each. It runs again for
    /// a key whenever its rows change, and the output changes by the difference. `name` names
    /// the operator (empty: an automatic name).
    #[track_caller]
    pub fn reduce<O: Row>(
        &self,
        name: &str,
        logic: impl Fn(&K, &[(&V, isize)], &mut Vec<(O, isize)>) + 'static,
    ) -> Result<KeyedTable<'s, K, O>> {
        let at = Location::caller();
        let name = if name.is_empty() {
            self.inner.shared.auto_name("reduce")
        } else {
            name.to_string()
        };
        let coll = self
            .inner
            .coll
            .clone()
            .reduce_named(&name, move |k, rows, out| logic(k, rows, out));
        Ok(KeyedTable {
            inner: self.inner.derive(name, at, coll)?,
        })
    }

    /// One output row per key: `f(key, rows)` for the key's current rows (each distinct value
    /// once, sorted, with its multiplicity), or none when `f` returns `None`.
    #[track_caller]
    pub fn reduce_to<O: Row>(
        &self,
        name: &str,
        f: impl Fn(&K, &[(&V, isize)]) -> Option<O> + 'static,
    ) -> Result<KeyedTable<'s, K, O>> {
        self.reduce(name, move |k, rows, out| {
            if let Some(o) = f(k, rows) {
                out.push((o, 1));
            }
        })
    }

    /// The number of rows per key.
    #[track_caller]
    pub fn count(&self, name: &str) -> Result<KeyedTable<'s, K, i64>> {
        self.reduce_to(name, |_, rows| {
            Some(rows.iter().map(|(_, r)| *r as i64).sum::<i64>())
        })
    }

    /// The values, keeping keys.
    #[track_caller]
    pub fn map_values<U: Row>(&self, f: impl Fn(V) -> U + 'static) -> KeyedTable<'s, K, U> {
        KeyedTable {
            inner: self.inner.map(move |(k, v)| (k, f(v))),
        }
    }

    /// The rows whose key and value pass `f`.
    #[track_caller]
    pub fn filter(&self, f: impl Fn(&K, &V) -> bool + 'static) -> KeyedTable<'s, K, V> {
        KeyedTable {
            inner: self.inner.filter(move |(k, v)| f(k, v)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Change;

    /// Changes come back from bincode (what timely sends between processes and checkpoints
    /// hold; the JSON shape's field names cannot be read back from it), and JSON keeps the
    /// documented `{"op":...,"row":...}` shape both ways.
    #[test]
    fn changes_round_trip_in_bincode_and_keep_their_json_shape() {
        let changes = vec![
            Change::Insert((7u64, "seven".to_string())),
            Change::Retract((8u64, "eight".to_string())),
        ];
        let bytes = bincode::serialize(&changes).unwrap();
        let back: Vec<Change<(u64, String)>> = bincode::deserialize(&bytes).unwrap();
        assert_eq!(back, changes);
        let json = serde_json::to_string(&changes).unwrap();
        assert_eq!(
            json,
            r#"[{"op":"insert","row":[7,"seven"]},{"op":"retract","row":[8,"eight"]}]"#
        );
        let back: Vec<Change<(u64, String)>> = serde_json::from_str(&json).unwrap();
        assert_eq!(back, changes);
    }
}
