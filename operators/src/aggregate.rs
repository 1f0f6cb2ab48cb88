//! Aggregates: what a window computes over its records. [`Aggregate`] is the trait (create, add,
//! merge, result); [`Count`], [`Sum`], [`Min`], [`Max`] and [`Avg`] are the built-in ones, and a
//! pair of aggregates is an aggregate of pairs.
//!
//! Because accumulators merge, windows pre-aggregate on each worker before the exchange (a
//! combiner), so a keyed window ships one partial per key, pane and epoch instead of every record.

use runnel_engine::Data;

/// A mergeable aggregate over values of type `V`.
///
/// # Contract
/// `merge` must be associative and commutative and agree with `add` (adding records one by one
/// to one accumulator equals adding them to several and merging), so that results do not depend
/// on how records were split across workers and epochs. A result is only asked of an accumulator
/// that holds at least one record.
pub trait Aggregate<V>: Clone + 'static {
    /// The running state.
    type Acc: Data;
    /// The result.
    type Out: Data;
    /// An empty accumulator.
    fn create(&self) -> Self::Acc;
    /// Adds one value.
    fn add(&self, acc: &mut Self::Acc, value: &V);
    /// Merges `other` into `acc`.
    fn merge(&self, acc: &mut Self::Acc, other: &Self::Acc);
    /// The result of an accumulator.
    fn result(&self, acc: &Self::Acc) -> Self::Out;
}

/// The number of records.
#[derive(Clone, Copy, Debug, Default)]
pub struct Count;

impl<V> Aggregate<V> for Count {
    type Acc = u64;
    type Out = u64;
    fn create(&self) -> u64 {
        0
    }
    #[inline]
    fn add(&self, acc: &mut u64, _: &V) {
        *acc += 1;
    }
    fn merge(&self, acc: &mut u64, other: &u64) {
        *acc += other;
    }
    fn result(&self, acc: &u64) -> u64 {
        *acc
    }
}

/// The sum of a field.
#[derive(Clone, Copy, Debug)]
pub struct Sum<F>(F);

impl<F> Sum<F> {
    /// The sum of `f(record)`.
    pub fn of(f: F) -> Self {
        Sum(f)
    }
}

impl<V, N, F> Aggregate<V> for Sum<F>
where
    F: Fn(&V) -> N + Clone + 'static,
    N: Data + Default + Copy + std::ops::AddAssign,
{
    type Acc = N;
    type Out = N;
    fn create(&self) -> N {
        N::default()
    }
    #[inline]
    fn add(&self, acc: &mut N, v: &V) {
        *acc += (self.0)(v);
    }
    fn merge(&self, acc: &mut N, other: &N) {
        *acc += *other;
    }
    fn result(&self, acc: &N) -> N {
        *acc
    }
}

/// The smallest value of a field.
#[derive(Clone, Copy, Debug)]
pub struct Min<F>(F);

impl<F> Min<F> {
    /// The minimum of `f(record)`.
    pub fn of(f: F) -> Self {
        Min(f)
    }
}

impl<V, N, F> Aggregate<V> for Min<F>
where
    F: Fn(&V) -> N + Clone + 'static,
    N: Data + Copy + PartialOrd,
{
    type Acc = Option<N>;
    type Out = N;
    fn create(&self) -> Option<N> {
        None
    }
    #[inline]
    fn add(&self, acc: &mut Option<N>, v: &V) {
        let x = (self.0)(v);
        match acc {
            Some(m) if *m <= x => {}
            _ => *acc = Some(x),
        }
    }
    fn merge(&self, acc: &mut Option<N>, other: &Option<N>) {
        if let Some(x) = *other {
            match acc {
                Some(m) if *m <= x => {}
                _ => *acc = Some(x),
            }
        }
    }
    fn result(&self, acc: &Option<N>) -> N {
        acc.expect("a window result holds at least one record")
    }
}

/// The largest value of a field.
#[derive(Clone, Copy, Debug)]
pub struct Max<F>(F);

impl<F> Max<F> {
    /// The maximum of `f(record)`.
    pub fn of(f: F) -> Self {
        Max(f)
    }
}

impl<V, N, F> Aggregate<V> for Max<F>
where
    F: Fn(&V) -> N + Clone + 'static,
    N: Data + Copy + PartialOrd,
{
    type Acc = Option<N>;
    type Out = N;
    fn create(&self) -> Option<N> {
        None
    }
    #[inline]
    fn add(&self, acc: &mut Option<N>, v: &V) {
        let x = (self.0)(v);
        match acc {
            Some(m) if *m >= x => {}
            _ => *acc = Some(x),
        }
    }
    fn merge(&self, acc: &mut Option<N>, other: &Option<N>) {
        if let Some(x) = *other {
            match acc {
                Some(m) if *m >= x => {}
                _ => *acc = Some(x),
            }
        }
    }
    fn result(&self, acc: &Option<N>) -> N {
        acc.expect("a window result holds at least one record")
    }
}

/// The arithmetic mean of a field, as `f64`.
#[derive(Clone, Copy, Debug)]
pub struct Avg<F>(F);

impl<F> Avg<F> {
    /// The mean of `f(record)`.
    pub fn of(f: F) -> Self {
        Avg(f)
    }
}

impl<V, F> Aggregate<V> for Avg<F>
where
    F: Fn(&V) -> f64 + Clone + 'static,
{
    type Acc = (f64, u64);
    type Out = f64;
    fn create(&self) -> (f64, u64) {
        (0.0, 0)
    }
    #[inline]
    fn add(&self, acc: &mut (f64, u64), v: &V) {
        acc.0 += (self.0)(v);
        acc.1 += 1;
    }
    fn merge(&self, acc: &mut (f64, u64), other: &(f64, u64)) {
        acc.0 += other.0;
        acc.1 += other.1;
    }
    fn result(&self, acc: &(f64, u64)) -> f64 {
        acc.0 / acc.1.max(1) as f64
    }
}

impl<V, A: Aggregate<V>, B: Aggregate<V>> Aggregate<V> for (A, B) {
    type Acc = (A::Acc, B::Acc);
    type Out = (A::Out, B::Out);
    fn create(&self) -> Self::Acc {
        (self.0.create(), self.1.create())
    }
    #[inline]
    fn add(&self, acc: &mut Self::Acc, v: &V) {
        self.0.add(&mut acc.0, v);
        self.1.add(&mut acc.1, v);
    }
    fn merge(&self, acc: &mut Self::Acc, other: &Self::Acc) {
        self.0.merge(&mut acc.0, &other.0);
        self.1.merge(&mut acc.1, &other.1);
    }
    fn result(&self, acc: &Self::Acc) -> Self::Out {
        (self.0.result(&acc.0), self.1.result(&acc.1))
    }
}

impl<V, A: Aggregate<V>, B: Aggregate<V>, C: Aggregate<V>> Aggregate<V> for (A, B, C) {
    type Acc = (A::Acc, B::Acc, C::Acc);
    type Out = (A::Out, B::Out, C::Out);
    fn create(&self) -> Self::Acc {
        (self.0.create(), self.1.create(), self.2.create())
    }
    #[inline]
    fn add(&self, acc: &mut Self::Acc, v: &V) {
        self.0.add(&mut acc.0, v);
        self.1.add(&mut acc.1, v);
        self.2.add(&mut acc.2, v);
    }
    fn merge(&self, acc: &mut Self::Acc, other: &Self::Acc) {
        self.0.merge(&mut acc.0, &other.0);
        self.1.merge(&mut acc.1, &other.1);
        self.2.merge(&mut acc.2, &other.2);
    }
    fn result(&self, acc: &Self::Acc) -> Self::Out {
        (
            self.0.result(&acc.0),
            self.1.result(&acc.1),
            self.2.result(&acc.2),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fold<A: Aggregate<u64>>(a: &A, xs: &[u64]) -> A::Acc {
        let mut acc = a.create();
        for x in xs {
            a.add(&mut acc, x);
        }
        acc
    }

    #[test]
    fn merging_partials_equals_adding_all() {
        let xs = [5u64, 3, 9, 1, 7];
        let id = |x: &u64| *x;
        let agg = (Count, (Sum::of(id), (Min::of(id), Max::of(id))));
        let whole = fold(&agg, &xs);
        let mut left = fold(&agg, &xs[..2]);
        agg.merge(&mut left, &fold(&agg, &xs[2..]));
        assert_eq!(agg.result(&left), agg.result(&whole));
        assert_eq!(agg.result(&whole), (5, (25, (1, 9))));
        let avg = Avg::of(|x: &u64| *x as f64);
        assert_eq!(avg.result(&fold(&avg, &xs)), 5.0);
    }
}
