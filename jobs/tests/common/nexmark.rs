// q19's answer by brute force, shared by the tests that check it (included with `include!`,
// as common/kafka.rs is).

/// q19 by brute force: each auction's bids sorted by q19's order (the higher price first, then
/// the earlier `date_time`, then the smaller bidder, channel, url and padding), the first ten
/// numbered 1 to 10; in auction order.
fn q19_top_tens(bids: impl IntoIterator<Item = Bid>) -> Vec<Q19> {
    let mut per_auction: BTreeMap<u64, Vec<Bid>> = BTreeMap::new();
    for b in bids {
        per_auction.entry(b.auction).or_default().push(b);
    }
    let mut want = Vec::new();
    for (_, mut bids) in per_auction {
        bids.sort_by(|a, b| {
            b.price.cmp(&a.price).then(
                (a.date_time, a.bidder, &a.channel, &a.url, &a.extra).cmp(&(
                    b.date_time,
                    b.bidder,
                    &b.channel,
                    &b.url,
                    &b.extra,
                )),
            )
        });
        for (i, b) in bids.into_iter().take(10).enumerate() {
            want.push(Q19 {
                auction: b.auction,
                bidder: b.bidder,
                price: b.price,
                channel: b.channel,
                url: b.url,
                date_time: b.date_time,
                extra: b.extra,
                rank_number: i as u64 + 1,
            });
        }
    }
    want
}
