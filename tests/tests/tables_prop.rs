//! Property tests of updating tables (`runnel_engine::table`): an unwindowed join of two
//! streams and a reduce over its result, whose changelogs, applied in order up to the end of
//! any epoch, must equal a brute-force computation over the input records of the epochs up to
//! there.

mod common;

use std::collections::BTreeMap;

use common::{cases, cut_only, split_epochs, In};
use proptest::prelude::*;
use runnel_engine::testing::{Collector, TestItem, TestSource};
use runnel_engine::{run, Change, Job, SourceOptions};

type Joined = (u8, u64, u64);
type Reduced = (u8, (i64, u64));

/// A partition of records `(ts, key, value)` with cuts; keys `0..4`.
fn part(max_len: usize) -> impl Strategy<Value = Vec<In>> {
    prop::collection::vec((0u8..4, 0u64..50, prop::bool::weighted(0.2)), 0..max_len).prop_map(
        |recs| {
            let mut out = Vec::new();
            for (i, (k, v, cut)) in recs.into_iter().enumerate() {
                if cut {
                    out.push(In::Cut);
                }
                out.push(In::R((i as i64, k, v)));
            }
            out
        },
    )
}

fn items(p: &[In]) -> Vec<TestItem<(u8, u64)>> {
    p.iter()
        .map(|i| match *i {
            In::R((ts, k, v)) => TestItem::At(ts, (k, v)),
            In::Cut => TestItem::Cut,
        })
        .collect()
}

/// The multiset a changelog holds after applying every change of epochs `<= upto`; fails on a
/// row retracted more often than inserted.
fn apply<T: Ord + Clone + std::fmt::Debug>(
    log: &[(u64, Change<T>)],
    upto: u64,
) -> BTreeMap<T, i64> {
    let mut m: BTreeMap<T, i64> = BTreeMap::new();
    for (e, c) in log.iter().filter(|(e, _)| *e <= upto) {
        let _ = e;
        *m.entry(c.row().clone()).or_default() += c.diff();
    }
    for (row, n) in &m {
        assert!(
            *n >= 0,
            "row {row:?} retracted more than inserted up to epoch {upto}"
        );
    }
    m.retain(|_, n| *n != 0);
    m
}

fn bag<T: Ord>(rows: impl IntoIterator<Item = T>) -> BTreeMap<T, i64> {
    let mut m = BTreeMap::new();
    for r in rows {
        *m.entry(r).or_default() += 1;
    }
    m
}

fn check(a: &[In], b: &[In], workers: usize) -> Result<Vec<(u64, Change<Reduced>)>, TestCaseError> {
    let joined = Collector::<Change<Joined>>::new();
    let reduced = Collector::<Change<Reduced>>::new();
    let (j, r) = (joined.clone(), reduced.clone());
    let (ia, ib) = (items(a), items(b));
    let job = Job::new("tables", "join and reduce as tables", move |flow| {
        let left = flow
            .source(
                "a",
                TestSource::new(vec![ia.clone()]),
                SourceOptions::new().batch_size(3),
            )?
            .to_table()
            .key_by(|&(k, _)| k);
        let right = flow
            .source(
                "b",
                TestSource::new(vec![ib.clone()]),
                SourceOptions::new().batch_size(3),
            )?
            .to_table()
            .key_by(|&(k, _)| k);
        let pairs = left.join(&right).map(|(k, (_, va), (_, vb))| (k, va, vb));
        pairs.sink("joined", j.sink())?;
        pairs
            .key_by(|&(k, _, _)| k)
            .reduce_to("per-key", |_, rows| {
                let n: isize = rows.iter().map(|(_, r)| *r).sum();
                let max = rows.iter().map(|((_, va, vb), _)| va + vb).max()?;
                Some((n as i64, max))
            })?
            .into_table()
            .sink("reduced", r.sink())
    });
    run(&job, cut_only(workers)).expect("run");

    let (ea, eb) = (split_epochs(a), split_epochs(b));
    let last = ea.len().max(eb.len()) as u64;
    let jlog: Vec<(u64, Change<Joined>)> = joined
        .events()
        .into_iter()
        .map(|(e, ev)| (e.0, ev.data))
        .collect();
    let rlog: Vec<(u64, Change<Reduced>)> = reduced
        .events()
        .into_iter()
        .map(|(e, ev)| (e.0, ev.data))
        .collect();
    for upto in 0..=last {
        let upto_a: Vec<(u8, u64)> = ea
            .iter()
            .take(upto as usize + 1)
            .flatten()
            .map(|&(_, k, v)| (k, v))
            .collect();
        let upto_b: Vec<(u8, u64)> = eb
            .iter()
            .take(upto as usize + 1)
            .flatten()
            .map(|&(_, k, v)| (k, v))
            .collect();
        let mut want_join = Vec::new();
        for &(ka, va) in &upto_a {
            for &(kb, vb) in &upto_b {
                if ka == kb {
                    want_join.push((ka, va, vb));
                }
            }
        }
        let mut per_key: BTreeMap<u8, (i64, u64)> = BTreeMap::new();
        for &(k, va, vb) in &want_join {
            let e = per_key.entry(k).or_insert((0, 0));
            e.0 += 1;
            e.1 = e.1.max(va + vb);
        }
        prop_assert_eq!(
            apply(&jlog, upto),
            bag(want_join),
            "join after epoch {}",
            upto
        );
        prop_assert_eq!(
            apply(&rlog, upto),
            bag(per_key),
            "reduce after epoch {}",
            upto
        );
    }
    Ok(rlog)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases(24)))]

    /// At every epoch boundary the join's and the reduce's changelogs add up to the answer
    /// over the input so far, on 1 and 3 workers.
    #[test]
    fn changelogs_equal_brute_force_at_every_epoch(a in part(40), b in part(40)) {
        check(&a, &b, 1)?;
        check(&a, &b, 3)?;
    }
}

/// A fixed case whose answer changes: the maximum of a key goes up, so the reduce must retract
/// its old row and insert the new one in the same epoch, retraction first.
#[test]
fn a_changed_answer_is_retracted_then_inserted() {
    let a = vec![In::R((0, 1, 10)), In::Cut, In::R((1, 1, 30))];
    let b = vec![In::R((0, 1, 1)), In::Cut];
    let log = check(&a, &b, 2).unwrap();
    let want = vec![
        (0, Change::Insert((1, (1, 11)))),
        (1, Change::Retract((1, (1, 11)))),
        (1, Change::Insert((1, (2, 31)))),
    ];
    assert_eq!(log, want);
    // And the changelog's serialized form carries the operation.
    let json = serde_json::to_string(&Change::Retract((1u8, 2u64))).unwrap();
    assert_eq!(json, r#"{"op":"retract","row":[1,2]}"#);
}
