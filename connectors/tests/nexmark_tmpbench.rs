use runnel_connectors::nexmark::NexmarkConfig;
#[test]
fn bench() {
    let config = NexmarkConfig::new(5_000_000);
    let mut x = 0i64;
    for n in 0..5_000_000 { x ^= std::hint::black_box(config.event(n)).date_time(); }
    println!("{x}");
}
